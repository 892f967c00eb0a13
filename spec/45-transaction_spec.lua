-- s:transaction(fn [, opts]): commit on return, rollback on a raise or on
-- nil, err, bounded retries on serialization failures and deadlocks,
-- savepoints when nested, and a connection nothing else can use meanwhile.
local S = require "support"
local testing = require "tododb.testing"

local db, other, alice, bob, sa, sb

-- Like assert, but raises the error object itself (busted's assert makes a
-- string of it).
local function must(v, err)
  if v == nil then error(err, 0) end
  return v
end

local function titles(s)
  local out = {}
  for i, t in ipairs(assert(s:list_todos { order = "oldest" }).items) do out[i] = t.title end
  return out
end

-- The RLS setting as the connection sees it outside any transaction.
local function setting(conn)
  local rows = assert(conn:query "SELECT current_setting('tododb.user_id', true) AS v")
  return rows[1].v
end

describe("session:transaction", function()
  local kit = testing.use { reset = "each" }   -- this file's own database
  before_each(function()
    db = kit.db
    other = other or kit:connect()
    alice = kit:user { email = "alice@example.com" }
    bob = kit:user { email = "bob@example.com" }
    sa, sb = db:session(alice), db:session(bob)
  end)

  it("commits when fn returns and answers fn's results", function()
    local t, n = sa:transaction(function(tx)
      local a = assert(tx:create_todo { title = "first" })
      assert(tx:create_todo { title = "second" })
      assert(tx:toggle_todo(a.id))
      return assert(tx:get_todo(a.id)), assert(tx:count_todos())
    end)
    assert.equal("first", t.title)
    assert.is_true(t.completed)
    assert.equal(2, n)
    assert.same({ "first", "second" }, titles(other:session(alice)))
  end)

  it("answers true when fn returns nothing", function()
    assert.is_true(sa:transaction(function(tx) assert(tx:create_todo { title = "x" }) end))
    assert.equal(1, sa:count_todos())
  end)

  it("rolls back and re-raises what fn raised", function()
    local boom = { "boom" }
    local ok, got = pcall(sa.transaction, sa, function(tx)
      assert(tx:create_todo { title = "never" })
      error(boom)
    end)
    assert.is_false(ok)
    assert.equal(boom, got)
    assert.equal(0, sa:count_todos())
    assert.equal(0, other:session(alice):count_todos())
  end)

  it("rolls back and answers nil, err when fn returns nil, err", function()
    local t = assert(sa:create_todo { title = "kept" })
    local got, err = sa:transaction(function(tx)
      assert(tx:update_todo(t.id, { title = "changed" }))
      assert(tx:create_todo { title = "never" })
      return tx:get_todo(t.id + 100)     -- nil, not_found
    end)
    assert.is_nil(got)
    assert.equal("not_found", err.code)
    assert.same({ "kept" }, titles(sa))
  end)

  it("rolls back when fn returns false, err", function()
    local got, why = sa:transaction(function(tx)
      assert(tx:create_todo { title = "never" })
      return false, "changed my mind"
    end)
    assert.is_false(got)
    assert.equal("changed my mind", why)
    assert.equal(0, sa:count_todos())
  end)

  it("rolls back, and says so, when fn went on after a failed statement", function()
    local ghost = db:session(987654)     -- no such user: inserts fail (foreign key)
    local got, err = ghost:transaction(function(tx)
      local _, e = tx:create_todo { title = "orphan" }
      assert.equal("not_found", e.code)
      return "done"                      -- ignoring the failure
    end)
    assert.is_nil(got)
    assert.equal("internal", err.code)
    assert.equal("25P02", err.sqlstate)
    -- a failure refused in C sends nothing, so the transaction goes on
    got = sa:transaction(function(tx)
      assert(tx:create_todo { title = "kept" })
      local _, e = tx:create_todo { title = ("x"):rep(300) }
      assert.equal("invalid", e.code)
      return "done"
    end)
    assert.equal("done", got)
    assert.same({ "kept" }, titles(sa))
  end)

  it("keeps the row-level security setting for the whole transaction and drops it after", function()
    local t = assert(sa:create_todo { title = "mine" })
    assert(sa:transaction(function(tx)
      -- statements inside run without a setting of their own: row-level
      -- security would hide every row if the transaction's were missing
      for _ = 1, 3 do assert.equal("mine", assert(tx:get_todo(t.id)).title) end
      assert.equal(1, assert(tx:count_todos()))
    end))
    local v = setting(db)
    assert.is_true(v == nil or v == "")
    assert.equal(0, S.count(db, "SELECT count(*) AS n FROM todos"))
  end)

  it("isolates two users' concurrent transactions", function()
    local ta = assert(sa:create_todo { title = "alice's" })
    local tb = assert(sb:create_todo { title = "bob's" })
    local sb2 = other:session(bob)
    assert(sa:transaction(function(txa)
      assert(txa:create_todo { title = "alice new" })
      assert(sb2:transaction(function(txb)
        assert(txb:create_todo { title = "bob new" })
        -- each sees only its own rows, even by the other's id
        local _, e = txb:get_todo(ta.id)
        if ta.id ~= tb.id then assert.equal("not_found", e.code) end
        assert.same({ "bob's", "bob new" }, (function()
          local out = {}
          for i, x in ipairs(assert(txb:list_todos { order = "oldest" }).items) do out[i] = x.title end
          return out
        end)())
        assert.equal(2, assert(txb:count_todos()))
        assert.equal(2, assert(txa:count_todos()))
        assert.equal(0, assert(txb:delete_completed()))
        return true
      end))
      for _, x in ipairs(assert(txa:list_todos()).items) do assert.equal(alice.id, x.user_id) end
      return true
    end))
    assert.same({ "alice's", "alice new" }, titles(sa))
    assert.same({ "bob's", "bob new" }, titles(sb))
  end)

  it("refuses other calls on its connection while fn runs", function()
    local t = assert(sb:create_todo { title = "bob's" })
    local tx_kept
    assert(sa:transaction(function(tx)
      tx_kept = tx
      assert.error_matches(function() sb:get_todo(t.id) end,
        "connection is inside a transaction: use the transaction's session", 1, true)
      assert.has_error(function() sa:count_todos() end)
      assert.has_error(function() db:query "SELECT 1" end)
      assert.has_error(function() db:exec "COMMIT" end)
      assert.has_error(function() db:get_user(bob.id) end)
      assert.has_error(function() sb:transaction(function() end) end)
      -- another connection is not affected
      assert.equal("bob's", assert(other:session(bob):get_todo(t.id)).title)
      return true
    end))
    assert.error_matches(function() tx_kept:count_todos() end, "transaction is over", 1, true)
    assert.equal(1, sb:count_todos())
    assert.equal("tododb.Connection", tostring(db):match "^tododb%.Connection")
  end)

  it("nests as a savepoint", function()
    local n = assert(sa:transaction(function(tx)
      assert(tx:create_todo { title = "outer" })
      local got, err = tx:transaction(function(inner)
        assert.equal(tx, inner)
        assert(inner:create_todo { title = "inner, undone" })
        return nil, "no"
      end)
      assert.is_nil(got)
      assert.equal("no", err)
      assert.is_false(pcall(tx.transaction, tx, function(inner)
        assert(inner:create_todo { title = "inner, raised" })
        error "no"
      end))
      assert.equal("kept", tx:transaction(function(inner)
        assert(inner:create_todo { title = "inner, kept" })
        return "kept"
      end))
      return tx:count_todos()
    end))
    assert.equal(2, n)
    assert.same({ "outer", "inner, kept" }, titles(sa))
  end)

  it("retries the whole function on a serialization failure when allowed", function()
    local t = assert(sa:create_todo { title = "contended" })
    local sa2 = other:session(alice)
    local runs = 0
    local function body(tx)
      runs = runs + 1
      assert(tx:get_todo(t.id))          -- the snapshot is taken here
      if runs == 1 then assert(sa2:update_todo(t.id, { title = "by the other" })) end
      return tx:toggle_todo(t.id)
    end
    local got, err = sa:transaction(body, { isolation = "repeatable read" })
    assert.is_nil(got)
    assert.equal("conflict", err.code)
    assert.equal("40001", err.sqlstate)
    assert.equal(1, runs)
    assert.is_false(assert(sa:get_todo(t.id)).completed)

    runs = 0
    got = assert(sa:transaction(body, { isolation = "repeatable read", retries = 2 }))
    assert.equal(2, runs)
    assert.is_true(got.completed)
    assert.equal("by the other", got.title)
  end)

  it("gives up after the allowed number of retries", function()
    local t = assert(sa:create_todo { title = "contended" })
    local sa2 = other:session(alice)
    local runs = 0
    local ok, err = pcall(sa.transaction, sa, function(tx)
      runs = runs + 1
      assert(tx:get_todo(t.id))
      assert(sa2:toggle_todo(t.id))
      return must(tx:update_todo(t.id, { title = "mine" }))
    end, { isolation = "serializable", retries = 2 })
    assert.is_false(ok)
    assert.equal("40001", err.sqlstate)
    assert.equal(3, runs)
    assert.equal("contended", assert(sa:get_todo(t.id)).title)
  end)

  it("does not retry other failures", function()
    local runs = 0
    local got, err = sa:transaction(function(tx)
      runs = runs + 1
      return tx:get_todo(12345)
    end, { retries = 5 })
    assert.is_nil(got)
    assert.equal("not_found", err.code)
    assert.equal(1, runs)
  end)

  it("leaves the connection clean after every outcome", function()
    pcall(sa.transaction, sa, function(tx) tx:create_todo { title = "x" }; error "x" end)
    sa:transaction(function() return nil, "x" end)
    assert(sa:transaction(function(tx) return tx:create_todo { title = "y" } end))
    local v = setting(db)
    assert.is_true(v == nil or v == "")
    assert.equal(1, sb:create_todos { { title = "bob" } })
    assert.same({ "y" }, titles(sa))
    assert.same({ "bob" }, titles(sb))
  end)

  it("checks its arguments", function()
    assert.has_error(function() sa:transaction() end)
    assert.has_error(function() sa:transaction("fn") end)
    assert.has_error(function() sa:transaction(function() end, 3) end)
    assert.has_error(function() sa:transaction(function() end, { retry = 1 }) end)
    assert.has_error(function() sa:transaction(function() end, { retries = "1" }) end)
    local got, err = sa:transaction(function() end, { retries = -1 })
    assert.is_nil(got)
    assert.equal("invalid", err.code)
    assert.equal("retries", err.field)
    got, err = sa:transaction(function() end, { isolation = "snapshot" })
    assert.is_nil(got)
    assert.equal("isolation", err.field)
    assert(sa:transaction(function(tx)
      assert.has_error(function() tx:transaction(function() end, { retries = 1 }) end)
    end))
  end)
end)
