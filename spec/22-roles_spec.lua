-- Two roles: the owner runs the migrations, the runtime role (DATABASE_URL)
-- owns nothing and cannot lower the row-level security wall. Sessions are
-- refused on a role the wall does not apply to.
local S = require "support"
local tododb = require "tododb"

local function two_roles(name, fn)
  if S.two_roles then return it(name, fn) end
  return pending(name .. " [needs TODODB_OWNER_URL, a role other than DATABASE_URL's]")
end

-- Asserts that raw SQL fails with that SQLSTATE (42501: insufficient privilege).
local function refused(db, sql, state)
  local ok, err = db:exec(sql)
  assert.is_nil(ok, sql .. " was allowed")
  assert.equal(state or "42501", err.sqlstate, sql .. ": " .. tostring(err.message))
end

describe("the runtime role", function()
  local db, alice, bob
  before_each(function()
    db = S.fresh()
    alice = assert(db:create_user { email = "alice@example.com", password = "alice password" })
    bob = assert(db:create_user { email = "bob@example.com", password = "bob password" })
    assert(db:session(alice):create_todo { title = "alice's" })
    assert(db:session(bob):create_todo { title = "bob's" })
  end)
  after_each(function() db:close() end)

  two_roles("cannot alter, disable or drop the wall or the tables", function()
    for _, sql in ipairs {
      "ALTER TABLE todos NO FORCE ROW LEVEL SECURITY",
      "ALTER TABLE todos DISABLE ROW LEVEL SECURITY",
      "ALTER TABLE todo_counters NO FORCE ROW LEVEL SECURITY",
      "DROP POLICY todos_owner ON todos",
      "CREATE POLICY open ON todos USING (true)",
      "ALTER TABLE users ADD COLUMN x int",
      "ALTER TABLE todos OWNER TO current_user",
      "DROP TABLE todos",
      "TRUNCATE todos",
      "CREATE INDEX ON todos (title)",
      "DELETE FROM tododb_migrations",
      "CREATE TABLE public.mine (x int)",
    } do refused(db, sql) end
    refused(db, "SET ROLE tododb_owner", nil)
  end)

  two_roles("sees no todos and no counters without the setting, and only its own with it", function()
    assert.equal(0, S.count(db, "SELECT count(*) AS n FROM todos"))
    assert.equal(0, S.count(db, "SELECT count(*) AS n FROM todo_counters"))
    assert(db:exec "BEGIN")
    S.set_user(db, alice.id)
    assert.equal(1, S.count(db, "SELECT count(*) AS n FROM todos"))
    assert.equal(1, S.count(db, "SELECT count(*) AS n FROM todo_counters"))
    assert(db:exec "ROLLBACK")
  end)

  two_roles("owns nothing and is told so by db:info()", function()
    local info = assert(db:info())
    assert.is_false(info.superuser)
    assert.is_false(info.bypassrls)
    assert.is_false(info.owns_tables)
    assert.is_false(info.can_lower_wall)
    assert.is_false(info.rls_bypassed)
    assert.equal(0, S.count(db, [[SELECT count(*) AS n FROM pg_class
      WHERE relnamespace = 'public'::regnamespace AND pg_has_role(relowner, 'MEMBER')]]))
  end)

  two_roles("cannot apply migrations, but migrate() on an up-to-date schema succeeds", function()
    local res = assert(db:migrate())
    assert.same({}, res.applied)
    local owner = S.owner()
    assert(owner:exec "DROP OWNED BY current_user")
    owner:close()
    local ok, err = db:migrate()
    assert.is_nil(ok)
    assert.equal("42501", err.sqlstate, err.message)
  end)
end)

describe("db:info() on the owner and on a superuser", function()
  two_roles("the owner could lower the wall", function()
    local db = S.fresh()
    db:close()
    local owner = S.owner()
    local info = assert(owner:info())
    assert.is_true(info.owns_tables)
    assert.is_false(info.superuser)
    assert.is_true(info.can_lower_wall)
    owner:close()
  end)

  it("a superuser could lower the wall", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
    local admin = assert(tododb.connect(S.admin_url))
    local info = assert(admin:info())
    assert.is_true(info.superuser)
    assert.is_true(info.rls_bypassed)
    assert.is_true(info.can_lower_wall)
    admin:close()
  end)
end)

describe("sessions on a role the wall does not apply to", function()
  local db, alice
  before_each(function()
    db = S.fresh()
    alice = assert(db:create_user { email = "alice@example.com", password = "alice password" })
  end)
  after_each(function() db:close() end)

  it("are refused on a superuser unless allow_rls_bypass is set", function()
    if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
    local admin = assert(tododb.connect(S.admin_url))
    local ok, err = pcall(admin.session, admin, alice)
    assert.is_false(ok)
    assert.matches("superuser", tostring(err), 1, true)
    assert.matches("allow_rls_bypass", tostring(err), 1, true)
    -- account calls still work: they do not rely on the wall
    assert.equal(alice, assert(admin:get_user(alice.id)))
    admin:close()
    admin = assert(tododb.connect(S.admin_url, { allow_rls_bypass = true }))
    assert(admin:session(alice):create_todo { title = "allowed" })
    admin:close()
    assert.equal(1, db:session(alice):count_todos())
  end)

  for _, how in ipairs { "itself", "through a role it can SET ROLE to (like Neon's neon_superuser)" } do
    it("are refused on a role that has BYPASSRLS " .. how, function()
      if not S.admin_url then return pending "TODODB_ADMIN_URL is not set" end
      if S.pooler then return pending "the pooler's auth file knows only the suite's own roles" end
      local url = S.url:gsub("([?&]user=)[^&]*", "%1tododb_spec_bypass")
      if url == S.url or not S.url:find("[?&]user=") then
        return pending "DATABASE_URL does not name its user as ?user= (the embedded database's form)"
      end
      local admin = assert(tododb.connect(S.admin_url))
      assert(admin:exec [[
        DROP ROLE IF EXISTS tododb_spec_bypass;
        DROP ROLE IF EXISTS tododb_spec_bypass_group;
        CREATE ROLE tododb_spec_bypass_group NOLOGIN BYPASSRLS;]])
      if how == "itself" then
        assert(admin:exec "CREATE ROLE tododb_spec_bypass LOGIN BYPASSRLS")
      else
        assert(admin:exec [[
          CREATE ROLE tododb_spec_bypass LOGIN;
          GRANT tododb_spec_bypass_group TO tododb_spec_bypass]])
      end
      assert(admin:exec "GRANT tododb_app TO tododb_spec_bypass")
      local ok, res = pcall(function()
        local conn = assert(tododb.connect(url))
        local info = assert(conn:info())
        local okk, err = pcall(conn.session, conn, alice)
        conn:close()
        return { info = info, ok = okk, err = tostring(err) }
      end)
      assert(admin:exec "DROP ROLE tododb_spec_bypass; DROP ROLE tododb_spec_bypass_group")
      admin:close()
      assert(ok, res)
      assert.is_false(res.info.superuser)
      assert.is_true(res.info.bypassrls)
      assert.is_true(res.info.can_lower_wall)
      assert.is_false(res.ok)
      assert.matches("BYPASSRLS", res.err, 1, true)
    end)
  end

  it("are allowed on the runtime role, checked once per connection", function()
    local s = assert(db:session(alice))
    assert(s:create_todo { title = "mine" })
    assert.equal(1, db:session(alice):count_todos())
  end)
end)
