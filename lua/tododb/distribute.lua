-- Citus: turns a migrated database into a distributed one (db:distribute(),
-- `tododb distribute`). users becomes a reference table (a copy on every
-- node); every table keyed by user_id is distributed by user_id, co-located
-- with todos, so each session statement runs on one shard. Recorded in
-- tododb_migrations like a migration (version -1); a later run places only
-- the tables that are not placed yet (added by later migrations).
local core = require "tododb.core"
local migrate = require "tododb.migrate"

local M = {}

M.VERSION, M.NAME = -1, "citus_distribute"
-- The checksum recorded: the plan's identity (bump when the plan changes).
M.CHECKSUM = core.sha256 "users reference; user_id tables distributed by user_id, colocated with todos; v1"

local function fail(code, msg, ...)
  return nil, core.error(code, msg:format(...))
end

local function one(db, sql, ...)
  local rows, err = db:query(sql, ...)
  if not rows then return nil, err end
  return rows[1] or false
end

-- The cluster is there and answers: Citus in this database, at least one
-- worker, every worker reachable from here. Returns the workers or nil, err.
function M.check_nodes(db)
  local ext, err = one(db, "SELECT extversion FROM pg_extension WHERE extname = 'citus'")
  if ext == nil then return nil, err end
  if not ext then
    return fail("unavailable", "Citus is not installed in this database "
      .. "(as a superuser: CREATE EXTENSION citus; then add the workers with citus_add_node)")
  end
  local rows
  rows, err = db:query("SELECT nodename, nodeport, success, result"
    .. " FROM run_command_on_workers('SELECT 1') ORDER BY 1, 2")
  if not rows then return nil, err end
  if #rows == 0 then
    return fail("unavailable", "this Citus coordinator has no worker nodes (citus_add_node)")
  end
  for _, r in ipairs(rows) do
    if not r.success then
      return fail("unavailable", "Citus worker %s:%s cannot be reached: %s", r.nodename,
                  tostring(r.nodeport), tostring(r.result))
    end
  end
  return rows
end

-- Tables of this schema with their place in the plan, in dependency order:
-- users first, then tables with user_id whose every unique key contains
-- user_id (distributed), then the rest of the tables with user_id (reference).
local TABLES = [[
SELECT c.relname AS name, quote_ident(c.relname) AS ident,
       EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'user_id'
               AND NOT a.attisdropped) AS has_user_id,
       NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique
                   AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid
                                   AND a.attname = 'user_id' AND a.attnum = ANY (i.indkey)))
         AS keys_have_user_id,
       -- a Citus local table (what Citus makes of a new table with a
       -- foreign key to a reference table) stays on the coordinator: unplaced
       CASE WHEN p.partmethod = 'n' AND p.repmodel <> 't' THEN NULL ELSE p.partmethod END AS citus,
       c.relforcerowsecurity AS forced
  FROM pg_class c
  LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
   AND c.relname <> 'tododb_migrations'
 ORDER BY c.relname = 'todos' DESC, c.relname]]

-- Foreign keys from or to a table (dropped before distributing, re-added).
local FKEYS = [[
SELECT conrelid::regclass::text AS tbl, quote_ident(conname) AS name, pg_get_constraintdef(oid) AS def,
       (SELECT relname FROM pg_class WHERE oid = conrelid) AS from_name,
       (SELECT relname FROM pg_class WHERE oid = confrelid) AS to_name
  FROM pg_constraint
 WHERE contype = 'f' AND connamespace = current_schema()::regnamespace
 ORDER BY 1, 2]]

-- Places the tables of the schema that are not placed yet.
local function distribute_tx(db, tables)
  local ok, err
  local function step(sql, ...)
    if not ok then return end
    ok, err = db:query(sql, ...)
  end
  ok = true
  -- DDL on distributed tables in one transaction runs shard by shard.
  step "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"
  local have, new = {}, {}
  for _, t in ipairs(tables) do
    have[t.name] = t
    if not t.citus then new[t.name] = t end
  end
  if not have.users or not have.todos then
    return fail("invalid", "distribute: the tables users and todos must exist (run migrate first)")
  end
  local all
  all, err = db:query(FKEYS)
  if not all then return nil, err end
  local fkeys = {}
  for _, fk in ipairs(all) do
    if new[fk.from_name] or new[fk.to_name] then
      fkeys[#fkeys + 1] = fk
      step(("ALTER TABLE %s DROP CONSTRAINT %s"):format(fk.tbl, fk.name))
    end
  end
  -- Existing rows are copied into the shards as the owner: the policies are
  -- not forced during the move (the transaction hides the window).
  local forced = {}
  for _, t in ipairs(tables) do
    if new[t.name] and t.forced then
      forced[#forced + 1] = t.ident
      step(("ALTER TABLE %s NO FORCE ROW LEVEL SECURITY"):format(t.ident))
    end
  end
  if not ok then return nil, err end
  if not have.users.citus then step "SELECT create_reference_table('users')" end
  if not have.todos.citus then step "SELECT create_distributed_table('todos', 'user_id')" end
  for _, t in ipairs(tables) do
    if not t.citus and t.name ~= "users" and t.name ~= "todos" then
      if t.has_user_id and t.keys_have_user_id then
        step("SELECT create_distributed_table($1, 'user_id', colocate_with => 'todos')", t.name)
      else
        step("SELECT create_reference_table($1)", t.name)
      end
    end
  end
  for _, fk in ipairs(fkeys) do
    step(("ALTER TABLE %s ADD CONSTRAINT %s %s"):format(fk.tbl, fk.name, fk.def))
  end
  for _, name in ipairs(forced) do
    step(("ALTER TABLE %s FORCE ROW LEVEL SECURITY"):format(name))
  end
  if not ok then return nil, err end
  return true
end

-- db:distribute() -> { distributed = bool (placed any table), workers = n } | nil, err
function M.distribute(db)
  local workers, err = M.check_nodes(db)
  if not workers then return nil, err end
  local status
  status, err = migrate.status(db)
  if not status then return nil, err end
  for _, s in ipairs(status) do
    if not s.applied then
      return fail("invalid", "distribute: migration %s is not applied (run migrate first)", s.name)
    end
  end
  local ok
  ok, err = db:exec "BEGIN ISOLATION LEVEL READ COMMITTED"
  if not ok then return nil, err end
  local function rollback(e)
    db:exec "ROLLBACK"
    return nil, e
  end
  ok, err = db:query("SELECT pg_advisory_xact_lock($1)", migrate.LOCK_KEY)
  if not ok then return rollback(err) end
  local done
  done, err = one(db, "SELECT checksum FROM tododb_migrations WHERE version = $1", M.VERSION)
  if done == nil then return rollback(err) end
  local tables
  tables, err = db:query(TABLES)
  if not tables then return rollback(err) end
  local unplaced = false
  for _, t in ipairs(tables) do unplaced = unplaced or not t.citus end
  if not unplaced then
    db:exec "ROLLBACK"
    return { distributed = false, workers = #workers }
  end
  ok, err = distribute_tx(db, tables)
  if not ok then return rollback(err) end
  if done then                          -- tables of later migrations only
    ok, err = db:exec "COMMIT"
    if not ok then return rollback(err) end
    return { distributed = true, workers = #workers }
  end
  -- SET LOCAL of the session statements reaches the workers (new sessions).
  ok, err = db:query "SELECT quote_ident(current_database()) AS d"
  if not ok then return rollback(err) end
  ok, err = db:exec(("ALTER DATABASE %s SET citus.propagate_set_commands = 'local'"):format(ok[1].d))
  if not ok then return rollback(err) end
  ok, err = db:query("INSERT INTO tododb_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                     M.VERSION, M.NAME, M.CHECKSUM)
  if not ok then return rollback(err) end
  ok, err = db:exec "COMMIT"
  if not ok then return rollback(err) end
  return { distributed = true, workers = #workers }
end

-- db:distribution_status() -> { distributed = bool, tables = {name = "reference"|"distributed"|"local"} }
function M.status(db)
  local ext, err = one(db, "SELECT 1 AS x FROM pg_extension WHERE extname = 'citus'")
  if ext == nil then return nil, err end
  if not ext then return { distributed = false, tables = {} } end
  local rows
  rows, err = db:query(TABLES)
  if not rows then return nil, err end
  local out = { tables = {} }
  for _, r in ipairs(rows) do
    out.tables[r.name] = r.citus == "n" and "reference" or r.citus == "h" and "distributed"
                         or r.citus and "citus" or "local"
  end
  local done
  done, err = one(db, "SELECT 1 AS x FROM tododb_migrations WHERE version = $1", M.VERSION)
  if done == nil then return nil, err end
  out.distributed = done and true or false
  return out
end

return M
