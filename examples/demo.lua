-- make demo: the embedded database, the schema, two users and their todos,
-- told as a short story. Run with the paths of `make -s env`.
local tododb = require "tododb"

local function say(fmt, ...) print(fmt:format(...)) end

local db = assert(tododb.connect())
local info = assert(db:info())
say("Connected to PostgreSQL %s as %s (database %s); row-level security %s.",
    info.server_version, info.user, info.database,
    info.rls_bypassed and "BYPASSED (superuser role!)" or "in force")

-- Migrations run as the role that owns the tables (README: Security).
local owner = assert(tododb.connect(os.getenv "TODODB_OWNER_URL"))
local result = assert(owner:migrate())
owner:close()
say("Migrations applied now: %s", #result.applied > 0 and table.concat(result.applied, ", ") or "none (up to date)")
for _, m in ipairs(assert(db:migration_status())) do
  say("  %s  applied=%s  at %s  checksum %s", m.name, tostring(m.applied),
      m.applied_at or "-", m.checksum_ok and "ok" or "CHANGED")
end

-- A fresh demo each time: remove the demo accounts from a previous run.
for _, email in ipairs { "alice@example.com", "bob@example.com" } do
  local u = db:find_user(email)
  if u then db:delete_user(u.id) end
end

print()
local alice = assert(db:create_user { email = "Alice@Example.com", password = "correct horse battery" })
local bob = assert(db:create_user { email = "bob@example.com", password = "hunter2hunter2" })
say("Created %s and %s.", tostring(alice), tostring(bob))

local u, err = db:authenticate("alice@example.com", "wrong password")
say("Alice logs in with a wrong password: %s (%s)", tostring(u), err.code)
u = assert(db:authenticate("  ALICE@example.com ", "correct horse battery"))
say("Alice logs in with the right one: %s", tostring(u))

local as_alice, as_bob = db:session(alice), db:session(bob)
local milk = assert(as_alice:create_todo { title = "Buy milk", description = "2 litres" })
assert(as_alice:create_todo { title = "Call the plumber" })
assert(as_alice:create_todo { title = "File taxes", completed = true })
-- Todo ids count per user: Bob's plan is his #4, a number Alice has not reached.
assert(as_bob:create_todos { { title = "Water the plants" }, { title = "Fix the bike" },
                             { title = "Call mum" } })
local bobs = assert(as_bob:create_todo { title = "Bob's secret plan" })

print()
for _, who in ipairs { { "Alice", as_alice }, { "Bob", as_bob } } do
  local page = assert(who[2]:list_todos())
  say("%s sees %d todos:", who[1], #page.items)
  for _, t in ipairs(page.items) do
    say("  [%s] #%s %s", t.completed and "x" or " ", tostring(t.id), t.title)
  end
end

print()
local got
got, err = as_alice:get_todo(bobs.id)
say("Alice asks for Bob's todo #%s: %s (%s)", tostring(bobs.id), tostring(got), err.code)
got, err = as_alice:delete_todo(bobs.id)
say("Alice tries to delete it: %s (%s); Bob still has: %s", tostring(got), err.code,
    tostring(assert(as_bob:get_todo(bobs.id))))
local done = assert(as_alice:update_todo(milk.id, { completed = true }))
say("Alice completes #%s: %s", tostring(milk.id), tostring(done))
say("Alice: %d open, %d done. Bob: %d open.", as_alice:count_todos { completed = false },
    as_alice:count_todos { completed = true }, as_bob:count_todos { completed = false })
say("Deleting Bob's account removes his %d todos.", assert(db:delete_user(bob.id)))
db:close()
