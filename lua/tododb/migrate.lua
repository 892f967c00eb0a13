-- Migration runner: applies lua/tododb/migrations/*.sql in order.
-- Each migration runs in its own transaction that first takes a
-- transaction-level advisory lock (session locks do not survive
-- transaction-mode poolers) and re-checks what is applied.
local core = require "tododb.core"

local M = {}

-- The migrations, in order. A file's name is NNNN_name.sql.
M.list = { "0001_init", "0002_identity", "0003_distributable", "0004_identities",
           "0005_runtime_grants" }

local LOCK_KEY = 7305620261125 -- pg_advisory_xact_lock key of tododb
M.LOCK_KEY = LOCK_KEY

local TABLE = [[
CREATE TABLE IF NOT EXISTS tododb_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)]]

local dir = (debug.getinfo(1, "S").source:match "^@(.*)[/\\]" or ".") .. "/migrations/"

local function fail(code, msg)
  return nil, core.error(code, msg)
end

-- Reads every migration file: { version, name, sql, checksum }.
local function load()
  local out = {}
  for _, file in ipairs(M.list) do
    local f, err = io.open(dir .. file .. ".sql", "rb")
    if not f then return fail("internal", "migration file missing: " .. tostring(err)) end
    local sql = f:read "*a"
    f:close()
    out[#out + 1] = { version = tonumber(file:match "^(%d+)_"), name = file,
                      sql = sql, checksum = core.sha256(sql) }
  end
  return out
end

local function applied(db)
  local rows, err = db:query "SELECT version, name, checksum, applied_at FROM tododb_migrations ORDER BY version"
  if not rows then return nil, err end
  local by = {}
  for _, r in ipairs(rows) do by[r.version] = r end
  return by
end

local function tampered(m, row)
  return fail("conflict", ("migration %s was changed after it was applied " ..
    "(checksum %s, applied %s); write a new migration instead"):format(
    m.name, m.checksum:sub(1, 12), row.checksum:sub(1, 12)))
end

-- Applies one migration unless it is there already. Returns true, applied?
-- READ COMMITTED whatever default_transaction_isolation says: every statement
-- after the lock then sees what an earlier holder committed (under
-- REPEATABLE READ the snapshot would predate the lock).
local function apply(db, m)
  local ok, err = db:exec "BEGIN ISOLATION LEVEL READ COMMITTED"
  if not ok then return nil, err end
  local function rollback(e)
    db:exec "ROLLBACK"
    return nil, e
  end
  ok, err = db:query("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
  if not ok then return rollback(err) end
  ok, err = db:exec(TABLE)
  if not ok then return rollback(err) end
  local done
  done, err = applied(db)
  if not done then return rollback(err) end
  local row = done[m.version]
  if row then
    db:exec "ROLLBACK"
    if row.checksum ~= m.checksum then return tampered(m, row) end
    return true, false
  end
  ok, err = db:exec(m.sql)
  if not ok then return rollback(err) end
  ok, err = db:query("INSERT INTO tododb_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                     m.version, m.name, m.checksum)
  if not ok then return rollback(err) end
  ok, err = db:exec "COMMIT"
  if not ok then return rollback(err) end
  return true, true
end

-- db:migrate() -> { applied = {names…} } | nil, err
function M.migrate(db)
  local list, err = load()
  if not list then return nil, err end
  -- Refuse before touching anything when an applied file was changed.
  local status
  status, err = M.status(db, list)
  if not status then return nil, err end
  local pending = false
  for i, s in ipairs(status) do
    if s.applied and not s.checksum_ok then return tampered(list[i], { checksum = s.applied_checksum }) end
    pending = pending or not s.applied
  end
  local result = { applied = {} }
  -- Up to date: nothing is written, so the runtime role (which may not
  -- create or change tables) can call migrate() at start-up too.
  if not pending then return result end
  for _, m in ipairs(list) do
    local ok, did = apply(db, m)
    if not ok then return nil, did end
    if did then result.applied[#result.applied + 1] = m.name end
  end
  return result
end

-- db:migration_status() -> { {version, name, applied, applied_at, checksum_ok}… }
function M.status(db, list)
  local err
  if not list then
    list, err = load()
    if not list then return nil, err end
  end
  local exists
  exists, err = db:query "SELECT to_regclass('tododb_migrations') IS NOT NULL AS x"
  if not exists then return nil, err end
  local done = {}
  if exists[1].x then
    done, err = applied(db)
    if not done then return nil, err end
  end
  local out = {}
  for _, m in ipairs(list) do
    local row = done[m.version]
    out[#out + 1] = {
      version = m.version, name = m.name, applied = row ~= nil,
      applied_at = row and row.applied_at, checksum_ok = not row or row.checksum == m.checksum,
      applied_checksum = row and row.checksum,
    }
  end
  return out
end

return M
