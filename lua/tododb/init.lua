-- tododb: the data layer of a multi-user todo application.
-- Policy and convenience over the C core (tododb.core).
local core = require "tododb.core"
local migrate = require "tododb.migrate"
local distribute = require "tododb.distribute"

local M = { _VERSION = core._VERSION, null = core.null, core = core, token = core.token }

-- The URL of the embedded development database of the checkout this file
-- lives in, if it runs: scripts/devdb writes it to .tododb/url on start and
-- removes it on stop. A file read, never a process (nginx thread VMs too).
function M.devdb_url()
  local top = debug.getinfo(1, "S").source:match "^@(.*)/lua/tododb/init%.lua$"
  local f = top and io.open(top .. "/.tododb/url", "r")
  if not f then return nil end
  local url = f:read "*l"
  f:close()
  return url ~= "" and url or nil
end

local PREPARE = { on = true, ["true"] = true, ["1"] = true, off = false, ["false"] = false, ["0"] = false }

-- `?tododb_prepare=off` (URL) or `tododb_prepare=off` / `tododb_prepare='off'`
-- (conninfo) is ours, not libpq's: take it out and turn it into
-- opts.prepare = false. -> url, opts | nil, err (a value that is not on/off).
local function own_options(url, opts)
  local value
  local function take(v) value = v; return "" end
  url = url:gsub("([?&])tododb_prepare=([^&#]*)&?", function(sep, v) take(v); return sep end)
           :gsub("[?&]$", "")
  url = url:gsub("%f[%w_]tododb_prepare%s*=%s*'([^']*)'", take)
           :gsub("%f[%w_]tododb_prepare%s*=%s*([^%s']*)", take)
  if value == nil then return url, opts end
  local prepare = PREPARE[value:lower()]
  if prepare == nil then
    return nil, core.error("invalid", "tododb_prepare must be on or off, got '" .. value .. "'")
  end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.prepare = prepare
  return url, o
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
  local conninfo, o = own_options(url, opts)
  if not conninfo then return nil, o end
  return core.connect(conninfo, o)
end

-- Connection methods written in Lua.
local Connection = core.Connection

function Connection:migrate() return migrate.migrate(self) end
function Connection:migration_status() return migrate.status(self) end
function Connection:distribute() return distribute.distribute(self) end
function Connection:distribution_status() return distribute.status(self) end

-- Options of user_id_from_token/session_from_token that verify() does not know.
local OWN = { map_subject = true, provision = true }

-- The email to provision from claims: claims.email unless provision.email == false.
local function claimed_email(claims, provision)
  if type(provision) == "table" and provision.email == false then return nil end
  return type(claims.email) == "string" and claims.email or nil
end

-- db:provision_claims(claims [, opts]) -> User, created | nil, err
-- The user of verified claims' (iss, sub), created with claims.email on
-- first use (db:provision_user); opts.email = false leaves the email out, as
-- does an email tododb cannot store. No iss, or an unusable sub, is
-- unauthorized; an email held by another account is conflict.
function Connection:provision_claims(claims, opts)
  if type(claims.iss) ~= "string" then
    return nil, core.error("unauthorized", "token has no issuer to provision its subject under")
  end
  if type(claims.sub) ~= "string" then
    return nil, core.error("unauthorized", "token has no subject to provision")
  end
  local ident = { issuer = claims.iss, subject = claims.sub, email = claimed_email(claims, opts) }
  local user, created = self:provision_user(ident)
  if not user and created.code == "invalid" and created.field == "email" then
    ident.email = nil                   -- an email tododb cannot store is left out
    user, created = self:provision_user(ident)
  end
  if not user and created.code == "invalid" then
    return nil, core.error("unauthorized", created.message, created.field)
  end
  return user, created
end

local function user_id(db, token, key, opts)
  local map, provision, vopts = opts and opts.map_subject, opts and opts.provision, opts
  if map and provision then
    error("bad argument #3 (map_subject and provision exclude each other)", 3)
  end
  if provision and not db then
    error("bad argument #3 (provision needs a database: use db:session_from_token)", 3)
  end
  if map ~= nil or provision ~= nil then -- verify() refuses options it does not know
    vopts = {}
    for k, v in pairs(opts) do if not OWN[k] then vopts[k] = v end end
  end
  local claims, err = core.token.verify(token, key, vopts)
  if not claims then return nil, err end
  local id = claims.sub
  if map then
    id, err = map(id, claims)
    if id == nil and err ~= nil then return nil, err end
  elseif provision then
    local user
    user, err = db:provision_claims(claims, provision)
    return user and user.id, err
  elseif not (type(id) == "string" and id:match "^[1-9]%d*$"
              and (#id < 19 or (#id == 19 and id <= "9223372036854775807"))) then
    id = nil
  end
  if id == nil then
    return nil, core.error("unauthorized", "token subject is not a user of this application")
  end
  return id
end

-- tododb.user_id_from_token(token, key [, opts]) -> user id | nil, err
-- Verifies a bearer token (tododb.token.verify; key decides the algorithm)
-- and returns the user id its `sub` names: one of our ids in decimal
-- ("42", int8 range), or what opts.map_subject(sub, claims) returns (nil, err
-- from it is returned as is). Any other subject is unauthorized. Needs no
-- database (nginx checks tokens in the worker with it).
function M.user_id_from_token(token, key, opts)
  return user_id(nil, token, key, opts)
end

-- db:session_from_token(token, key [, opts]) -> Session | nil, err
-- A session bound to tododb.user_id_from_token(token, key, opts), or with
-- opts.provision to the user of the token's (iss, sub) identity, found or
-- created (db:provision_user).
function Connection:session_from_token(token, key, opts)
  local id, err = user_id(self, token, key, opts)
  if not id then return nil, err end
  return self:session(id)
end

return M
