-- Migrations: first run, idempotence, status, concurrency, tampering.
local S = require "support"
local migrate = require "tododb.migrate"
local system = require "system"

-- The advisory lock key migrate.lua takes (pg_advisory_xact_lock).
local LOCK_KEY = assert(migrate.LOCK_KEY)

-- An empty schema: everything the owner role owns dropped, nothing migrated.
local function empty()
  local db = S.owner()
  assert(db:exec "DROP OWNED BY current_user")
  return db
end

local function tables(db)
  local rows = assert(db:query [[
    SELECT c.relname::text AS name FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY c.relname::text COLLATE "C"]])
  local out = {}
  for _, r in ipairs(rows) do out[#out + 1] = r.name end
  return out
end

local function applied_rows(db)
  return assert(db:query "SELECT version, name, checksum, applied_at FROM tododb_migrations ORDER BY version")
end

describe("db:migrate", function()
  local db
  before_each(function() db = empty() end)
  after_each(function() db:close() end)

  it("creates the schema on an empty database", function()
    assert.same({}, tables(db))
    local res, err = db:migrate()
    assert.is_nil(err)
    assert.same(migrate.list, res.applied)
    assert.same({ "todo_counters", "tododb_migrations", "todos", "user_identities", "users" }, tables(db))
    local rows = applied_rows(db)
    assert.equal(#migrate.list, #rows)
    assert.equal(1, rows[1].version)
    assert.equal("0001_init", rows[1].name)
    assert.matches("^%x+$", rows[1].checksum)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$", rows[1].applied_at)
  end)

  it("applies nothing the second time", function()
    assert(db:migrate())
    local before = applied_rows(db)
    local res = assert(db:migrate())
    assert.same({}, res.applied)
    assert.same(before, applied_rows(db))
  end)

  it("lists the status of every migration", function()
    local st = assert(db:migration_status())
    assert.equal(#migrate.list, #st)
    assert.equal("0001_init", st[1].name)
    assert.is_false(st[1].applied)
    assert(db:migrate())
    st = assert(db:migration_status())
    assert.equal(#migrate.list, #st)
    assert.equal(1, st[1].version)
    assert.equal("0001_init", st[1].name)
    assert.is_true(st[1].applied)
    assert.is_true(st[1].checksum_ok)
    assert.is_string(st[1].applied_at)
  end)

  it("refuses with conflict when an applied migration's checksum changed, running nothing", function()
    assert(db:migrate())
    assert(db:query("INSERT INTO users (email, hashed_password) VALUES ($1, 'x')", "kept@example.com"))
    assert(db:query "UPDATE tododb_migrations SET checksum = 'x'")
    local before = applied_rows(db)
    local res, err = db:migrate()
    assert.is_nil(res)
    assert.equal("conflict", err.code)
    assert.matches("0001_init", err.message, 1, true)
    assert.matches("changed", err.message, 1, true)
    assert.equal(err.message, tostring(err))
    -- Nothing ran: the record is untouched and the data is still there.
    assert.same(before, applied_rows(db))
    assert.equal(1, S.count(db, "SELECT count(*) AS n FROM users WHERE email = $1", "kept@example.com"))
    local st = assert(db:migration_status())
    assert.is_true(st[1].applied)
    assert.is_false(st[1].checksum_ok)
  end)
end)

describe("two processes migrating at once", function()
  local db, holder
  before_each(function()
    db = empty()
    holder = S.owner()
  end)
  after_each(function()
    holder:exec "ROLLBACK"
    holder:close()
    db:close()
  end)

  local function spawn(tag, url)
    local script = ([[
      local tododb = require "tododb"
      local db, err = tododb.connect(%q, { connect_timeout = 10 })
      if not db then print("FAIL %s connect " .. tostring(err)) os.exit(1) end
      local res
      res, err = db:migrate()
      if not res then print("FAIL %s migrate " .. tostring(err)) os.exit(1) end
      print("OK %s " .. #res.applied)
    ]]):format(url or S.owner_url, tag, tag, tag)
    return S.spawn_lua(script)
  end

  local function waiting(n)
    for _ = 1, 200 do                       -- up to ~10 s
      local rows = assert(holder:query(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        .. " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        .. " AND classid::bigint = ($1::bigint >> 32) AND objid::bigint = ($1::bigint & 4294967295)",
        LOCK_KEY))
      if rows[1].n >= n then return true end
      system.sleep(0.05)
    end
    return false
  end

  it("apply the migration exactly once and both succeed", function()
    assert(holder:exec "BEGIN")
    assert(holder:query("SELECT pg_advisory_xact_lock($1)", LOCK_KEY))
    local a, b = spawn "A", spawn "B"
    local both_blocked = waiting(2)
    assert(holder:exec "ROLLBACK")            -- release: both proceed
    local out_a, out_b = a:read "*a", b:read "*a"
    a:close(); b:close()
    assert.is_true(both_blocked, "both migrators should have waited on the lock")
    assert.matches("^OK A %d+%s*$", out_a)
    assert.matches("^OK B %d+%s*$", out_b)
    local n_a = tonumber(out_a:match "OK A (%d+)")
    local n_b = tonumber(out_b:match "OK B (%d+)")
    -- each migration applied once, by one or the other; the other found it done
    assert.equal(#migrate.list, n_a + n_b)
    assert.equal(#migrate.list, #applied_rows(db))
    assert.same({ "todo_counters", "tododb_migrations", "todos", "user_identities", "users" }, tables(db))
  end)

  -- The lock must be held before the transaction's snapshot is taken, or a
  -- waiter sees the schema as it was before the holder committed.
  for _, level in ipairs { "repeatable read", "serializable" } do
    it("apply the migration exactly once under default_transaction_isolation = " .. level, function()
      if S.pooler then return pending "PgBouncer drops the startup parameter options (-c ...)" end
      local opt = ("-c default_transaction_isolation=" .. level:gsub(" ", "\\ "))
        :gsub("[^%w%-_.]", function(ch) return ("%%%02X"):format(ch:byte()) end)
      local url = S.owner_url .. (S.owner_url:find("?", 1, true) and "&" or "?") .. "options=" .. opt
      local probe = assert(require("tododb").connect(url, S.opts()))
      assert.equal(level, probe:query "SHOW default_transaction_isolation"[1].default_transaction_isolation)
      probe:close()
      assert(holder:exec "BEGIN")
      assert(holder:query("SELECT pg_advisory_xact_lock($1)", LOCK_KEY))
      local procs = {}
      for i = 1, 4 do procs[i] = spawn("P" .. i, url) end
      local all_blocked = waiting(4)
      assert(holder:exec "ROLLBACK")
      local applied = 0
      for i, p in ipairs(procs) do
        local out = p:read "*a"
        p:close()
        assert.matches("^OK P" .. i .. " %d+%s*$", out)
        applied = applied + tonumber(out:match "OK P%d+ (%d+)")
      end
      assert.is_true(all_blocked, "every migrator should have waited on the lock")
      assert.equal(#require("tododb.migrate").list, applied)
      assert.same({ "todo_counters", "tododb_migrations", "todos", "user_identities", "users" }, tables(db))
    end)
  end
end)
