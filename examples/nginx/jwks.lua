-- examples/nginx/jwks.lua: bearer tokens of an external auth service (Better
-- Auth's jwt plugin, any issuer of EdDSA JWTs with a JWKS), verified in the
-- nginx worker against a key set nginx fetches itself.
--
--   TODODB_JWKS_URL      the key set's URL, fetched through the internal
--                        location /_tododb/jwks (proxy_pass; see nginx.conf)
--   TODODB_JWKS_FILE     or a file holding it (read again like a fetch)
--   TODODB_JWKS_REFRESH  seconds a key set is used before it is fetched
--                        again (default 300)
--   TODODB_TOKEN_ISSUER, TODODB_TOKEN_AUDIENCE  required iss / aud
--                        (Better Auth: its baseURL, for both)
--   TODODB_TOKEN_LEEWAY  seconds of clock skew allowed (default: tododb's)
--   TODODB_PROVISION_EMAIL  "off": provisioned users get no email
--
-- The key set lives in the shared dict tododb_jwks (one copy for all
-- workers). A token whose kid is not in it makes one worker fetch it again,
-- at most once every MIN_INTERVAL seconds across all workers; a failed fetch
-- keeps the old set.
local tododb = require "tododb"
local cjson = require "cjson.safe"

local J = { MIN_INTERVAL = 10 }

local getenv = require("tododb.nginx").getenv

-- Whether tokens are verified against a JWKS (else the own HS256 mode).
function J.enabled()
  return getenv "TODODB_JWKS_URL" ~= nil or getenv "TODODB_JWKS_FILE" ~= nil
end

-- verify() options from the environment.
function J.options()
  local o = { issuer = getenv "TODODB_TOKEN_ISSUER", audience = getenv "TODODB_TOKEN_AUDIENCE" }
  local leeway = tonumber(getenv "TODODB_TOKEN_LEEWAY" or "")
  if leeway then o.leeway = leeway end
  return o
end

-- The settings that cannot work, or nil (checked once per worker).
function J.problem()
  if not ngx.shared.tododb_jwks then return "lua_shared_dict tododb_jwks is not declared" end
  if not getenv "TODODB_TOKEN_ISSUER" then
    return "TODODB_TOKEN_ISSUER is not set: tokens of any issuer holding the key would be taken"
  end
  if getenv "TODODB_TOKEN_LEEWAY" and not tonumber(getenv "TODODB_TOKEN_LEEWAY") then
    return "TODODB_TOKEN_LEEWAY must be a number of seconds"
  end
end

-- The key set's text from its source | nil, why.
local function fetch()
  local body
  local file = getenv "TODODB_JWKS_FILE"
  if file then
    local f, err = io.open(file, "rb")
    if not f then return nil, "cannot read TODODB_JWKS_FILE: " .. tostring(err) end
    body = f:read "*a"
    f:close()
  else
    local res = ngx.location.capture("/_tododb/jwks")
    if res.status ~= 200 then
      return nil, "GET TODODB_JWKS_URL answered " .. tostring(res.status)
    end
    body = res.body
  end
  local set = cjson.decode(body or "")
  if type(set) ~= "table" or type(set.keys) ~= "table" then
    return nil, "the key set is not a JSON object with keys"
  end
  return body
end

-- The key set | nil, why. force: fetch now (an unknown kid), rate-limited.
function J.get(force)
  local dict = ngx.shared.tododb_jwks
  local set, at = dict:get "set", dict:get "at"
  local stale = not set or ngx.now() - (at or 0) >= tonumber(getenv "TODODB_JWKS_REFRESH" or "300")
  if not (force or stale) then return set end
  -- One fetch per MIN_INTERVAL across workers; the others keep what there is.
  if not dict:add("fetching", true, J.MIN_INTERVAL) then
    if set then return set end
    return nil, "the key set is being fetched (or failed less than " .. J.MIN_INTERVAL .. " s ago)"
  end
  local body, why = fetch()
  if not body then
    ngx.log(ngx.WARN, "tododb: key set fetch failed: ", why)
    if set then return set end
    return nil, why
  end
  dict:set("set", body)
  dict:set("at", ngx.now())
  return body
end

-- The claims tododb.nginx provisions from ({ iss =, sub =, email = }) |
-- nil, why, code ("unauthorized" for the token, "unavailable" for no key set).
function J.identity(token)
  local set, why = J.get(false)
  if not set then return nil, why, "unavailable" end
  local opts = J.options()
  local ok, claims, err = pcall(tododb.token.verify, token, set, opts)
  if ok and not claims and err.reason == "unknown_kid" then
    local fresh = J.get(true)
    if fresh and fresh ~= set then ok, claims, err = pcall(tododb.token.verify, token, fresh, opts) end
  end
  if not ok then return nil, "key set unusable: " .. tostring(claims), "unavailable" end
  if not claims then     -- a key set without a usable key is ours to fix, not the client's
    return nil, err.message, err.reason == "no_usable_key" and "unavailable" or "unauthorized"
  end
  local email = getenv "TODODB_PROVISION_EMAIL" ~= "off" and type(claims.email) == "string"
    and claims.email or nil
  return { iss = claims.iss, sub = claims.sub, email = email }
end

return J
