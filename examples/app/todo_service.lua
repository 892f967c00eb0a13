-- examples/app/todo_service.lua: a small piece of an application built on
-- tododb, tested by examples/app/spec/ with tododb.testing.
local M = {}

-- Marks the todos done, all or none: one round trip.
-- -> the updated todos | nil, err (err.index names the todo that failed)
function M.complete(s, ids)
  local ops = {}
  for i, id in ipairs(ids) do ops[i] = { op = "update", id = id, completed = true } end
  return s:batch(ops)
end

-- Closes a todo and opens its follow-up in one transaction.
-- -> the follow-up | nil, err (nothing changed)
function M.carry_over(s, id, title)
  return s:transaction(function(tx)
    local old, err = tx:update_todo(id, { completed = true })
    if not old then return nil, err end
    return tx:create_todo { title = title or old.title .. " (again)", description = old.description }
  end)
end

-- Counts of a user's open and done todos.
function M.summary(s)
  local open = assert(s:count_todos { completed = false })
  local done = assert(s:count_todos { completed = true })
  return { open = open, done = done }
end

return M
