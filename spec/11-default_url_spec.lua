-- spec/11-default_url_spec.lua: tododb.connect() without a URL takes
-- $DATABASE_URL, else the embedded database's URL from the checkout's
-- .tododb/url (written by scripts/devdb start): a file read, no process.
local S = require "support"

local function sh(s) return "'" .. (tostring(s):gsub("'", [['\'']])) .. "'" end

local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read "*a"
  f:close()
  return s
end

local TOP = S.capture("pwd"):gsub("%s+$", "")
local INTERP = S.capture("command -v " .. S.interp):gsub("%s+$", "")   -- PATH is emptied below

describe("tododb.connect() without a URL", function()
  local dir

  -- A checkout holding only lua/ (no scripts/, so nothing to run), with
  -- .tododb/url when url is given.
  local function checkout(url)
    if dir then S.run("rm -rf " .. sh(dir)) end
    dir = os.tmpname()
    os.remove(dir)
    assert(S.run("mkdir -p " .. sh(dir .. "/.tododb") .. " && cp -r " .. sh(TOP .. "/lua") .. " " .. sh(dir)))
    if url then write(dir .. "/.tododb/url", url .. "\n") end
  end

  -- Runs connect() in a fresh interpreter on that checkout, with env set
  -- before (e.g. "DATABASE_URL=..."), PATH emptied: -> its one line of output.
  local function connect_there(env)
    local script = dir .. "/probe.lua"
    write(script, [[
      local tododb = require "tododb"
      local db, err = tododb.connect(nil, { pwhash = "min" })
      if not db then io.write("error ", err.code) return end
      io.write("connected ", db:query("SELECT current_setting('application_name') AS a")[1].a)
      db:close()
    ]])
    return S.capture("env -u DATABASE_URL " .. (env or "") .. " PATH=/nonexistent"
      .. " LUA_PATH=" .. sh(dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua")
      .. " LUA_CPATH=" .. sh(package.cpath) .. " " .. sh(INTERP) .. " " .. sh(script) .. " 2>&1")
  end

  local function with_app(url, name)
    if url:match "^postgres[%w]*://" then
      return url .. (url:find("?", 1, true) and "&" or "?") .. "application_name=" .. name
    end
    return url .. " application_name=" .. name
  end

  teardown(function() if dir then S.run("rm -rf " .. sh(dir)) end end)

  it("reads the embedded database's URL from .tododb/url, without spawning a process", function()
    checkout(with_app(S.url, "from-url-file"))
    assert.equal("connected from-url-file", connect_there())
  end)

  it("prefers $DATABASE_URL to the file", function()
    checkout(with_app(S.url, "from-url-file"))
    assert.equal("connected from-env", connect_there("DATABASE_URL=" .. sh(with_app(S.url, "from-env"))))
  end)

  it("answers unavailable when there is neither", function()
    checkout(nil)
    assert.equal("error unavailable", connect_there())
  end)

  it("is the file scripts/devdb start writes (when the specs run on the embedded database)", function()
    local url = read(TOP .. "/.tododb/url")
    if not url then return pending "the specs do not run on the embedded database" end
    assert.equal(S.capture(sh(TOP .. "/scripts/devdb") .. " url"), url)
  end)
end)
