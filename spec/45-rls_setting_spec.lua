-- The row-level security setting, in one pipeline with the statement:
-- BEGIN; SET LOCAL tododb.user_id; statement; COMMIT on Citus (make
-- test-citus), set_config(..., true); statement elsewhere. It holds for the
-- statement only, a failed statement leaves no open transaction behind, and
-- with prepare on or off alike.
local S = require "support"

for _, prepare in ipairs { true, false } do
  describe("the session setting (prepare = " .. tostring(prepare) .. ")", function()
    local db, alice, s

    before_each(function()
      db = S.fresh { prepare = prepare }
      alice = assert(db:create_user { email = "alice@example.com", password = "correct horse 1" })
      s = db:session(alice)
    end)
    after_each(function() db:close() end)

    local function setting()
      local rows = assert(db:query "SELECT coalesce(current_setting('tododb.user_id', true), '') AS v")
      return rows[1].v
    end

    -- Two queries in two transactions (none was left open, nor aborted).
    local function idle()
      local a = assert(db:query "SELECT txid_current() AS x")[1].x
      local b = assert(db:query "SELECT txid_current() AS x")[1].x
      return a ~= b
    end

    it("is sent with SET LOCAL in an explicit block on Citus only", function()
      assert.equal(S.citus and "set_local" or "set_config", assert(db:info()).rls_setting)
    end)

    it("is in force for the statement and gone after it", function()
      local t = assert(s:create_todo { title = "one" })
      assert.equal(t.id, assert(s:get_todo(t.id)).id)
      assert.equal("", setting())
      assert.is_true(idle())
    end)

    it("makes the policy see the session's user inside the statement", function()
      assert(s:create_todo { title = "mine" })
      -- The runtime statements filter by user_id themselves; the policy alone
      -- (no WHERE) still shows exactly the user's rows through a session.
      assert.equal(1, s:count_todos())
      assert.equal(0, assert(db:query "SELECT count(*) AS n FROM todos")[1].n)
    end)

    it("leaves no transaction open after a failing statement, and the next call works", function()
      local ghost = db:session(alice.id + 1000)    -- no such user: the insert fails
      local t, err = ghost:create_todo { title = "nobody's" }
      assert.is_nil(t)
      assert.is_truthy(err.code == "not_found" or err.code == "invalid", err.code)
      assert.is_true(idle())
      assert.equal("", setting())
      assert(s:create_todo { title = "after the failure" })
      assert.equal(1, s:count_todos())
    end)
  end)
end
