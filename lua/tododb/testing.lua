-- tododb.testing: a clean, migrated database for each spec file of an
-- application's busted suite, factories for users and todos, and a teardown
-- that leaves nothing behind.
--
--   local testing = require "tododb.testing"
--   describe("my app", function()
--     local kit = testing.use()            -- setup/teardown registered with busted
--     it("…", function()
--       local s = kit:session()            -- a new user's session
--       local t = kit:todo(s, { completed = true })
--     end)
--   end)
--
-- Where the database comes from (first that is set):
--   opts.url, DATABASE_URL, the embedded database (scripts/devdb, started
--   when it is not running); owner: opts.owner_url, TODODB_OWNER_URL, else the
--   runtime URL; admin: opts.admin_url, TODODB_ADMIN_URL, else the embedded
--   database's superuser.
-- Modes:
--   "clone"   a template database, migrated once per set of migrations, is
--             cloned per spec file (CREATE DATABASE … TEMPLATE) and dropped
--             again; needs a role that may create databases (admin, else
--             owner, else runtime).
--   "shared"  no such role, or a server where a clone would not be the same
--             deployment (Citus, or a pooler that does not route the new
--             name): the runtime database itself, migrated, emptied before
--             and after the file. Spec files must then not run in parallel.
local tododb = require "tododb"
local core = require "tododb.core"
local migrate = require "tododb.migrate"

local M = {}

-- A name part no other process picks: 12 hex digits from /dev/urandom
-- (LuaJIT's math.random is not seeded per process).
local function unique()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(6)
  if f then f:close() end
  if b and #b == 6 then return (b:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
  return ("%x%s"):format(os.time(), tostring({}):match "0x(%x+)" or "")
end

local function fail(code, msg) return nil, core.error(code, msg) end

-- The URL (or key=value conninfo) with another database name.
function M.with_database(url, name)
  assert(name:match "^[%w_]+$", "database name must be letters, digits and _")
  local scheme, rest = url:match "^(postgres[a-z]*://)(.*)$"
  if scheme then
    local authority, path = rest:match "^([^/?#]*)(.*)$"
    local query = path:match "(%?.*)$" or ""
    return scheme .. authority .. "/" .. name .. query
  end
  if url:match "%f[%w_]dbname%s*=" then
    return (url:gsub("%f[%w_]dbname%s*=%s*'[^']*'", "dbname=" .. name)
               :gsub("%f[%w_]dbname%s*=%s*[^%s']+", "dbname=" .. name))
  end
  return url .. " dbname=" .. name
end

local function devdb(flag)
  local src = debug.getinfo(1, "S").source
  local root = src:match "^@(.*)/lua/tododb/testing%.lua$"
    or (src:match "^@lua/tododb/testing%.lua$" and ".")
  if not root then return nil end
  local script = root .. "/scripts/devdb"
  local function url()
    local p = io.popen(("'%s' url %s 2>/dev/null"):format(script, flag or ""))
    if not p then return nil end
    local u = p:read "*l"
    p:close()
    return u ~= "" and u or nil
  end
  local u = url()
  if not u then                            -- not running: start it (no setup needed)
    local p = io.popen(("'%s' start 2>&1"):format(script))
    if p then p:read "*a"; p:close() end
    u = url()
  end
  return u
end

local function env(name)
  local v = os.getenv(name)
  return v ~= "" and v or nil
end

-- Connection options for the kit's connections: cheapest argon2id unless asked.
local function copts(opts, extra)
  local o = { pwhash = "min" }
  for k, v in pairs(opts.connect or {}) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function scalar(db, sql, ...)
  local rows, err = db:query(sql, ...)
  if not rows then return nil, err end
  local _, v = next(rows[1] or {})
  return v
end

-- The SQL identifier for a role or database name (quoted).
local function ident(name) return '"' .. tostring(name):gsub('"', '""') .. '"' end

-- The template's name: a digest of the migration files, so that a changed
-- or added migration makes (and migrates) a new template.
local function template_name()
  local file = assert(package.searchpath("tododb.migrate", package.path))
  local dir = file:match "^(.*)[/\\]" .. "/migrations/"
  local parts = {}
  for i, name in ipairs(migrate.list) do
    local f = assert(io.open(dir .. name .. ".sql", "rb"))
    parts[i] = name .. "\0" .. f:read "*a"
    f:close()
  end
  return "tododb_tmpl_" .. core.sha256(table.concat(parts, "\0")):sub(1, 16)
end

local Kit = {}
Kit.__index = Kit

-- Can a clone of this server be used the way its own database is?
local function clonable(base)
  local citus = scalar(base, "SELECT count(*) AS n FROM pg_extension WHERE extname = 'citus'")
  return citus == 0
end

-- The role at url and whether it may create databases.
local function creator(url, opts)
  if not url then return nil end
  local db = tododb.connect(url, copts(opts))
  if not db then return nil end
  local rows = db:query [[SELECT current_user AS name, rolsuper OR rolcreatedb AS can
                          FROM pg_roles WHERE rolname = current_user]]
  if not (rows and rows[1] and rows[1].can) then db:close(); return nil end
  return db, rows[1].name
end

-- Makes the template (once per set of migrations) under a cluster-wide
-- advisory lock, so that concurrent suites build it once.
local function ensure_template(admin, owner_url, owner_name, admin_name, name)
  assert(admin:query("SELECT pg_advisory_lock($1)", migrate.LOCK_KEY + 1))
  local function unlock() admin:query("SELECT pg_advisory_unlock($1)", migrate.LOCK_KEY + 1) end
  local have = scalar(admin, "SELECT count(*) AS n FROM pg_database WHERE datname = $1", name)
  if have == 1 then unlock(); return true end
  local building = name .. "_b"
  admin:exec("DROP DATABASE IF EXISTS " .. ident(building))
  local ok, err = admin:exec(("CREATE DATABASE %s%s"):format(ident(building),
    owner_name ~= admin_name and " OWNER " .. ident(owner_name) or ""))
  if ok then
    local db
    db, err = tododb.connect(M.with_database(owner_url, building), { pwhash = "min" })
    if db then
      ok, err = db:migrate()
      db:close()
    else ok = nil end
  end
  if ok then ok, err = admin:exec(("ALTER DATABASE %s RENAME TO %s"):format(ident(building), ident(name))) end
  if not ok then admin:exec("DROP DATABASE IF EXISTS " .. ident(building)) end
  if ok then                              -- templates of older migrations: no longer used
    local old = admin:query([[SELECT datname FROM pg_database
                              WHERE datname LIKE 'tododb\_tmpl\_%' AND datname <> $1]], name)
    for _, r in ipairs(old or {}) do admin:exec("DROP DATABASE IF EXISTS " .. ident(r.datname)) end
  end
  unlock()
  return ok, err
end

-- testing.new([opts]) -> kit | nil, err
-- opts: url, owner_url, admin_url (see above), mode ("clone" | "shared",
-- default: clone when possible; TODODB_TESTING_MODE too), connect (options
-- for every connection the kit opens; pwhash defaults to "min").
function M.new(opts)
  opts = opts or {}
  local url = opts.url or env "DATABASE_URL"
  local embedded = not url
  url = url or devdb()
  if not url then
    return fail("unavailable", "tododb.testing: no database (set DATABASE_URL or start scripts/devdb)")
  end
  local owner_url = opts.owner_url or env "TODODB_OWNER_URL"
    or (embedded and devdb "--owner") or url
  local admin_url = opts.admin_url or env "TODODB_ADMIN_URL" or (embedded and devdb "--admin") or nil
  local kit = setmetatable({ conns = {}, opts = opts, n = 0 }, Kit)
  local base, err = tododb.connect(url, copts(opts))
  if not base then return nil, err end
  local mode = opts.mode or env "TODODB_TESTING_MODE"
  if mode == nil and not clonable(base) then mode = "shared" end
  if mode ~= "shared" then
    local admin, admin_name
    for _, u in ipairs { admin_url, owner_url, url } do
      admin, admin_name = creator(u, opts)
      if admin then break end
    end
    local owner = tododb.connect(owner_url, copts(opts))
    local owner_name = owner and scalar(owner, "SELECT current_user AS u")
    if owner then owner:close() end
    if admin and owner_name then
      local tmpl = template_name()
      local ok
      ok, err = ensure_template(admin, owner_url, owner_name, admin_name, tmpl)
      local name = "tododb_test_" .. unique()
      if ok then
        -- FILE_COPY (PostgreSQL 15+; the only way before) copies the files
        -- instead of logging every block: several times faster for a template.
        local strategy = admin:info().server_version_num >= 150000 and " STRATEGY = FILE_COPY" or ""
        ok, err = admin:exec(("CREATE DATABASE %s TEMPLATE %s%s%s"):format(ident(name), ident(tmpl),
          owner_name ~= admin_name and " OWNER " .. ident(owner_name) or "", strategy))
      end
      if ok then
        kit.database, kit.admin = name, admin
        kit.url = M.with_database(url, name)
        kit.owner_url = M.with_database(owner_url, name)
        kit.db, err = tododb.connect(kit.url, copts(opts))
        if not kit.db then                  -- e.g. a pooler that does not know the name
          kit:close()
          kit = setmetatable({ conns = {}, opts = opts, n = 0 }, Kit)
          if mode == "clone" then base:close(); return nil, err end
        else
          kit.mode = "clone"
        end
      else
        admin:close()
        if mode == "clone" then base:close(); return nil, err end
      end
    else
      if admin then admin:close() end
      if mode == "clone" then
        base:close()
        return fail("unavailable", "tododb.testing: no role may create databases (set TODODB_ADMIN_URL)")
      end
    end
  end
  if kit.mode == "clone" then
    base:close()
  else                                     -- shared: the runtime database itself
    kit.mode, kit.url, kit.owner_url, kit.db = "shared", url, owner_url, base
    local owner = base
    if owner_url ~= url then
      owner, err = tododb.connect(owner_url, copts(opts))
      if not owner then base:close(); return nil, err end
    end
    local ok
    ok, err = owner:migrate()
    if owner ~= base then owner:close() end
    if not ok then base:close(); return nil, err end
    ok, err = kit:reset()
    if not ok then base:close(); return nil, err end
  end
  kit.conns[1] = kit.db
  return kit
end

-- kit:connect([opts]) -> another connection to the kit's database, closed
-- by kit:close().
function Kit:connect(extra)
  local db = assert(tododb.connect(self.url, copts(self.opts, extra)))
  self.conns[#self.conns + 1] = db
  return db
end

-- kit:reset() -> true | nil, err: empties every table the migrations made
-- (the migration record stays), as the owner role.
function Kit:reset()
  local owner, err = self.owner_db
  if not owner then
    owner, err = tododb.connect(self.owner_url, copts(self.opts))
    if not owner then return nil, err end
    self.owner_db = owner
    self.conns[#self.conns + 1] = owner
  end
  if not self.tables then
    local rows
    rows, err = owner:query [[SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') AS t
                              FROM pg_tables WHERE schemaname = current_schema()
                              AND tablename <> 'tododb_migrations' AND tableowner = current_user]]
    if not rows then return nil, err end
    self.tables = rows[1].t or false
  end
  if not self.tables then return true end
  return owner:exec("TRUNCATE " .. self.tables .. " RESTART IDENTITY CASCADE")
end

local function next_n(self)
  self.n = self.n + 1
  return self.n
end

-- kit:user([fields]) -> User, password: a new user; fields override the
-- defaults (email user<N>@example.com, a password of 20+ characters).
function Kit:user(fields)
  local n = next_n(self)
  local f = { email = ("user%d@example.com"):format(n), password = ("password %d of the test kit"):format(n) }
  for k, v in pairs(fields or {}) do f[k] = v end
  local u = assert(self.db:create_user(f))
  return u, f.password
end

-- kit:session([user_or_id]) -> Session (of a new user when none is given).
function Kit:session(user, db)
  return (db or self.db):session(user or (self:user()))
end

local function session_of(self, who)
  if who == nil then return self:session() end
  if type(who) == "userdata" and tostring(who):match "^tododb%.Session" then return who end
  return self.db:session(who)
end

-- kit:todo([session_or_user [, fields]]) -> Todo: defaults title "Todo <N>",
-- not completed; a new user's when none is given.
function Kit:todo(who, fields)
  local f = { title = ("Todo %d"):format(next_n(self)) }
  for k, v in pairs(fields or {}) do f[k] = v end
  return assert(session_of(self, who):create_todo(f))
end

-- kit:todos(session_or_user, count [, fields]) -> { Todo… }, oldest first,
-- made in one batch.
function Kit:todos(who, count, fields)
  local ops = {}
  for i = 1, count do
    local f = { op = "create", title = ("Todo %d"):format(next_n(self)) }
    for k, v in pairs(fields or {}) do f[k] = v end
    ops[i] = f
  end
  if count == 0 then return {} end
  return assert(session_of(self, who):batch(ops))
end

-- kit:close(): closes the kit's connections; drops its database (clone
-- mode) or empties the tables (shared mode). Safe to call twice.
function Kit:close()
  if self.mode == "shared" and self.url then self:reset() end
  for _, db in ipairs(self.conns) do pcall(db.close, db) end
  self.conns, self.owner_db = {}, nil
  if self.admin and self.database then
    local ok = self.admin:exec("DROP DATABASE IF EXISTS " .. ident(self.database) .. " WITH (FORCE)")
    if not ok then self.admin:exec("DROP DATABASE IF EXISTS " .. ident(self.database)) end
    self.admin:close()
    self.admin, self.database = nil, nil
  end
  self.mode = nil
end

-- testing.use([opts]) -> kit for busted: registers setup (creates the
-- database when the block starts) and teardown (drops it), and with
-- opts.reset = "each" a before_each that empties the tables. Call it inside
-- a describe block (or at the top of a spec file).
function M.use(opts)
  opts = opts or {}
  local kit = setmetatable({ conns = {}, opts = opts, n = 0 }, Kit)
  local found, g = pcall(require, "busted")      -- busted's API (setup, teardown, …)
  assert(found and g.setup and g.teardown, "tododb.testing.use: run it under busted")
  g.setup(function()
    local k = assert(M.new(opts))
    for key, v in pairs(k) do kit[key] = v end
  end)
  g.teardown(function() kit:close() end)
  if opts.reset == "each" then g.before_each(function() assert(kit:reset()) end) end
  return kit
end

return M
