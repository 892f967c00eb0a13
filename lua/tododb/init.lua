-- tododb: the data layer of a multi-user todo application.
-- Policy and convenience over the C core (tododb.core).
local core = require "tododb.core"
local migrate = require "tododb.migrate"

local M = { _VERSION = core._VERSION, null = core.null, core = core, token = core.token }

-- The URL of the embedded development database (scripts/devdb), if running.
function M.devdb_url()
  local src = debug.getinfo(1, "S").source:match "^@(.*)/lua/tododb/init%.lua$"
  if not src then return nil end
  local p = io.popen("'" .. src .. "/scripts/devdb' url 2>/dev/null")
  if not p then return nil end
  local url = p:read "l"
  p:close()
  return url ~= "" and url or nil
end

-- `?tododb_prepare=off` (URL) or `tododb_prepare=off` (conninfo) is ours,
-- not libpq's: take it out and turn it into opts.prepare = false.
local function own_options(url, opts)
  local off
  url = url:gsub("([?&])tododb_prepare=(%w+)&?", function(sep, v)
    off = v == "off" or v == "false" or v == "0"
    return sep
  end):gsub("[?&]$", "")
  url = url:gsub("%f[%w_]tododb_prepare%s*=%s*(%w+)", function(v)
    off = v == "off" or v == "false" or v == "0"
    return ""
  end)
  if off ~= nil then
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.prepare = not off
    opts = o
  end
  return url, opts
end

-- tododb.connect([url_or_conninfo [, opts]]) -> db | nil, err
-- nil url: $DATABASE_URL, then the embedded development database.
function M.connect(url, opts)
  if url ~= nil and type(url) ~= "string" then
    error("bad argument #1 to 'connect' (string expected, got " .. type(url) .. ")", 2)
  end
  url = url or os.getenv "DATABASE_URL" or M.devdb_url()
  if not url then
    return nil, core.error("unavailable",
      "no database: pass a URL, set DATABASE_URL or start the embedded one (scripts/devdb start)")
  end
  return core.connect(own_options(url, opts))
end

-- Connection methods written in Lua.
local Connection = debug.getregistry()["tododb.Connection"].__index

function Connection:migrate() return migrate.migrate(self) end
function Connection:migration_status() return migrate.status(self) end

-- db:session_from_token(token, key [, opts]) -> Session | nil, err
-- Verifies a bearer token (tododb.token.verify; key decides the algorithm)
-- and binds a session to its `sub`. A `sub` that is not one of our user ids
-- is unauthorized unless opts.map_subject(sub, claims) returns a user id.
function Connection:session_from_token(token, key, opts)
  local map, vopts = opts and opts.map_subject, opts
  if map then                            -- verify() refuses options it does not know
    vopts = {}
    for k, v in pairs(opts) do if k ~= "map_subject" then vopts[k] = v end end
  end
  local claims, err = core.token.verify(token, key, vopts)
  if not claims then return nil, err end
  local id = claims.sub
  if map then
    id = map(id, claims)
  elseif not (type(id) == "string" and id:match "^[1-9]%d*$"
              and (#id < 19 or (#id == 19 and id <= "9223372036854775807"))) then
    id = nil                            -- decimal user ids in int8 range only
  end
  if id == nil then
    return nil, core.error("unauthorized", "token subject is not a user of this application")
  end
  return self:session(id)
end

return M
