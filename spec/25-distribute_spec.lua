-- db:distribute() and db:distribution_status(): a migrated schema made
-- distributed on Citus (make test-citus), refused where Citus is not there.
local S = require "support"

describe("db:distribute", function()
  local owner
  after_each(function() if owner then owner:close() end end)

  if not S.citus then
    it("answers unavailable where Citus is not installed, changing nothing", function()
      S.fresh():close()
      owner = S.owner()
      local res, err = owner:distribute()
      assert.is_nil(res)
      assert.equal("unavailable", err.code)
      assert.matches("Citus is not installed", err.message, 1, true)
      assert.same({ distributed = false, tables = {} }, assert(owner:distribution_status()))
      assert.equal(0, S.count(owner, "SELECT count(*) AS n FROM tododb_migrations WHERE version < 0"))
    end)
    return
  end

  -- Citus's own view of a table: its method ("h" hash, "n" reference), its
  -- distribution column and its co-location group.
  local function placement(name)
    return assert(owner:query([[
      SELECT partmethod AS method, column_to_column_name(logicalrelid, partkey) AS col,
             colocationid AS coloc
        FROM pg_dist_partition WHERE logicalrelid = $1::regclass]], name))[1]
  end

  it("distributes todos and todo_counters by user_id, co-located; users and identities are reference tables",
     function()
    S.fresh():close()                      -- migrated and distributed
    owner = S.owner()
    local st = assert(owner:distribution_status())
    assert.is_true(st.distributed)
    assert.same({ users = "reference", todos = "distributed", todo_counters = "distributed",
                  user_identities = "reference" }, st.tables)
    local todos, counters = placement "todos", placement "todo_counters"
    assert.equal("user_id", todos.col)
    assert.equal("user_id", counters.col)
    assert.equal(todos.coloc, counters.coloc)
    assert.equal("n", placement("users").method)
    assert.equal("n", placement("user_identities").method)
    -- the foreign keys are back, row-level security still forced
    assert.equal(3, S.count(owner, [[SELECT count(*) AS n FROM pg_constraint WHERE contype = 'f'
      AND confrelid = 'users'::regclass]]))
    assert.equal(2, S.count(owner, [[SELECT count(*) AS n FROM pg_class WHERE relforcerowsecurity
      AND oid IN ('todos'::regclass, 'todo_counters'::regclass)]]))
  end)

  it("is recorded once and does nothing the second time", function()
    S.fresh():close()
    owner = S.owner()
    assert.same({ distributed = false, workers = 2 }, assert(owner:distribute()))
    assert.equal(1, S.count(owner, "SELECT count(*) AS n FROM tododb_migrations WHERE version = -1"))
  end)

  it("places the tables of later migrations when run again", function()
    S.fresh():close()
    owner = S.owner()
    assert(owner:exec [[
      CREATE TABLE notes (user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                          id bigint NOT NULL, body text, PRIMARY KEY (user_id, id));
      CREATE TABLE tags (name text PRIMARY KEY)]])
    -- notes is a Citus local table now (its foreign key to a reference
    -- table): still on the coordinator only
    local st = assert(owner:distribution_status())
    assert.equal("local", st.tables.notes)
    assert.equal("local", st.tables.tags)
    assert.same({ distributed = true, workers = 2 }, assert(owner:distribute()))
    st = assert(owner:distribution_status())
    assert.equal("distributed", st.tables.notes)
    assert.equal("reference", st.tables.tags)
    assert.equal(placement("todos").coloc, placement("notes").coloc)
    assert.equal(1, S.count(owner, [[SELECT count(*) AS n FROM pg_constraint WHERE contype = 'f'
      AND conrelid = 'notes'::regclass AND confrelid = 'users'::regclass]]))
    assert.same({ distributed = false, workers = 2 }, assert(owner:distribute()))
  end)

  it("refuses a schema whose migrations are not applied", function()
    owner = S.owner()
    assert(owner:exec "DROP OWNED BY current_user")
    local res, err = owner:distribute()
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    assert.matches("is not applied", err.message, 1, true)
  end)
end)
