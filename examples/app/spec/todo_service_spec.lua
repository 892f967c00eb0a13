-- An application's own spec with tododb.testing: this file gets a database of
-- its own (a clone of a migrated template), emptied before each test and
-- dropped at the end.
local testing = require "tododb.testing"
local service = require "todo_service"

describe("todo_service", function()
  local kit = testing.use { reset = "each" }

  describe("complete", function()
    it("marks every todo done", function()
      local s = kit:session()
      local todos = kit:todos(s, 3)
      local done = assert(service.complete(s, { todos[1].id, todos[3].id }))
      assert.equal(2, #done)
      assert.same({ open = 1, done = 2 }, service.summary(s))
    end)

    it("changes nothing when one of them is not the user's", function()
      local alice, bob = kit:session(), kit:session()
      local mine = kit:todo(alice)
      local theirs = kit:todo(bob, { title = "bob's" })
      local done, err = service.complete(alice, { mine.id, theirs.id + 1000 })
      assert.is_nil(done)
      assert.equal("not_found", err.code)
      assert.equal(2, err.index)
      assert.same({ open = 1, done = 0 }, service.summary(alice))
      assert.is_false(assert(bob:get_todo(theirs.id)).completed)
    end)
  end)

  describe("carry_over", function()
    it("closes the todo and opens its follow-up together", function()
      local s = kit:session()
      local t = kit:todo(s, { title = "Water the plants", description = "balcony" })
      local next_one = assert(service.carry_over(s, t.id))
      assert.equal("Water the plants (again)", next_one.title)
      assert.equal("balcony", next_one.description)
      assert.same({ open = 1, done = 1 }, service.summary(s))
    end)

    it("changes nothing when the follow-up is refused", function()
      local s = kit:session()
      local t = kit:todo(s)
      local got, err = service.carry_over(s, t.id, ("x"):rep(300))
      assert.is_nil(got)
      assert.equal("invalid", err.code)
      assert.same({ open = 1, done = 0 }, service.summary(s))
    end)
  end)

  it("starts every test from empty tables", function()
    local s = kit:session()
    assert.same({ open = 0, done = 0 }, service.summary(s))
    assert.equal(1, #assert(kit.db:list_users()))
  end)
end)
