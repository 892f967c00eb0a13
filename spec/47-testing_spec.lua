-- tododb.testing: a database per spec file (clone of a migrated template, or
-- the shared database emptied), factories, teardown that leaves nothing; and
-- the example application's own suite (examples/app) run as an application
-- would run it.
local S = require "support"
local tododb = require "tododb"
local testing = require "tododb.testing"

local function databases(admin, pattern)
  local rows = assert(admin:query("SELECT datname FROM pg_database WHERE datname LIKE $1", pattern))
  local out = {}
  for _, r in ipairs(rows) do out[r.datname] = true end
  return out
end

describe("tododb.testing", function()
  it("rewrites the database name of URLs and key=value strings", function()
    local w = testing.with_database
    assert.equal("postgresql:///other?host=/tmp/x&port=5432",
                 w("postgresql:///tododb?host=/tmp/x&port=5432", "other"))
    assert.equal("postgres://u:p%40ss@db.example.com:5432/other?sslmode=require",
                 w("postgres://u:p%40ss@db.example.com:5432/app?sslmode=require", "other"))
    assert.equal("postgresql://localhost/other", w("postgresql://localhost", "other"))
    assert.equal("host=/tmp/x dbname=other user=u", w("host=/tmp/x dbname=tododb user=u", "other"))
    assert.equal("host=/tmp/x dbname=other user=u", w("host=/tmp/x dbname='my db' user=u", "other"))
    assert.equal("host=/tmp/x user=u dbname=other", w("host=/tmp/x user=u", "other"))
    assert.has_error(function() w("postgresql:///x", "bad name; DROP") end)
  end)

  describe("a kit", function()
    local kit
    after_each(function() if kit then kit:close() end end)

    it("gets a database of its own, migrated, and drops it at the end", function()
      if not S.admin_url then pending("needs TODODB_ADMIN_URL to look at pg_database") return end
      if S.citus then
        return pending "Citus: kits use the shared database (a cloned database would not be distributed)"
      end
      local admin = tododb.connect(S.admin_url)
      kit = assert(testing.new())
      assert.equal("clone", kit.mode)
      assert.truthy(databases(admin, "tododb_test_%")[kit.database])
      local name = kit.database
      for _, m in ipairs(assert(kit.db:migration_status())) do assert.is_true(m.applied) end
      local other = assert(testing.new())
      assert.are_not.equal(name, other.database)
      local t = kit:todo()
      assert.equal(0, other:session(t.user_id):count_todos())
      other:close()
      kit:close()
      kit = nil
      local left = databases(admin, "tododb_test_%")
      assert.is_nil(left[name])
      assert.is_nil(left[other.database])
      admin:close()
    end)

    it("makes users, sessions and todos with sensible defaults", function()
      kit = assert(testing.new())
      local u1, pw = kit:user()
      local u2 = kit:user { email = "Named@Example.com" }
      assert.are_not.equal(u1.email, u2.email)
      assert.equal("named@example.com", u2.email)
      assert.equal(u1, assert(kit.db:authenticate(u1.email, pw)))
      local s = kit:session(u1)
      local t = kit:todo(s)
      assert.matches("^Todo %d+$", t.title)
      assert.is_false(t.completed)
      assert.is_nil(t.description)
      local d = kit:todo(u1, { title = "given", completed = true, description = "x" })
      assert.same({ "given", true, "x" }, { d.title, d.completed, d.description })
      local list = kit:todos(s, 3, { completed = true })
      assert.equal(3, #list)
      for _, x in ipairs(list) do assert.is_true(x.completed) end
      assert.equal(5, s:count_todos())
      local fresh = kit:session()          -- a new user each time
      assert.are_not.equal(s.user_id, fresh.user_id)
      assert.equal(0, fresh:count_todos())
      local anyone = kit:todo()
      assert.are_not.equal(s.user_id, anyone.user_id)
      -- row-level security holds in the kit's database as in the real one
      local _, err = fresh:get_todo(t.id + 100)
      assert.equal("not_found", err.code)
    end)

    it("empties every table on reset and keeps the migrations", function()
      kit = assert(testing.new())
      kit:todos(kit:session(), 2)
      assert(kit:reset())
      assert.same({}, assert(kit.db:list_users()))
      for _, m in ipairs(assert(kit.db:migration_status())) do assert.is_true(m.applied) end
      local again = kit:session()
      assert.equal(0, again:count_todos())
      local more = kit:connect()
      assert.equal(1, #assert(more:list_users()))
    end)

    it("works on the shared database when asked, leaving its tables empty", function()
      kit = assert(testing.new { mode = "shared" })
      assert.equal("shared", kit.mode)
      assert.is_nil(kit.database)
      kit:todos(kit:session(), 2)
      kit:close()
      kit = nil
      local db = S.connect()
      assert.same({}, assert(db:list_users()))
      db:close()
    end)
  end)

  describe("the example application's suite", function()
    local top = S.capture("pwd"):gsub("%s+$", "")   -- run-specs runs from the top
    local interp = S.interp
    local build = os.getenv "TDB_BUILD" or ("build/" .. interp)

    -- Runs busted in examples/app as an application would; env: assignments.
    local function run(env)
      local cmd = ("cd '%s/examples/app' && %s LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;;' "
        .. "LUA_CPATH='%s/%s/?.so;;' %s /usr/bin/busted -o plainTerminal 2>&1"):format(
        top, env, top, top, top, build, interp)
      local out = S.capture(cmd)
      local ok, bad, errs = out:match "(%d+) successes? / (%d+) failures? / (%d+) errors?"
      return tonumber(ok), tonumber(bad), tonumber(errs), out
    end

    it("passes against the configured database", function()
      local ok, bad, errs, out = run ""
      assert.equal(5, ok, out)
      assert.equal(0, bad, out)
      assert.equal(0, errs, out)
    end)

    it("passes with no configuration at all (the embedded database)", function()
      local devdb = S.capture(("'%s/scripts/devdb' url 2>/dev/null"):format(top)):match "%S+"
      if devdb ~= S.url then pending("the suite runs against another server than the embedded one") return end
      local ok, bad, errs, out = run "env -u DATABASE_URL -u TODODB_OWNER_URL -u TODODB_ADMIN_URL"
      assert.equal(5, ok, out)
      assert.equal(0, bad + errs, out)
    end)
  end)
end)
