-- spec/90-rockspec_spec.lua: the rockspec builds and installs what the
-- checkout has: every csrc/*.c, every lua/tododb/*.lua module and every
-- migration (luarocks is not needed to read it: a rockspec is Lua).
local S = require "support"

local function lines(cmd)
  local t = {}
  for l in S.capture(cmd):gmatch "[^\n]+" do t[#t + 1] = l end
  table.sort(t)
  return t
end

local function sorted(t)
  table.sort(t)
  return t
end

describe("rockspec/tododb-scm-1.rockspec", function()
  local spec = {}
  setup(function()
    local chunk = assert(loadfile("rockspec/tododb-scm-1.rockspec", "t", spec))
    if setfenv then setfenv(chunk, spec) end     -- LuaJIT ignores loadfile's env
    chunk()
  end)

  it("compiles every csrc/*.c into tododb.core", function()
    assert.same(lines "ls csrc/*.c", sorted(spec.build.modules["tododb.core"].sources))
  end)

  it("installs every Lua module under its name", function()
    local want, got = {}, {}
    for _, f in ipairs(lines "ls lua/tododb/*.lua") do
      local name = f:match "^lua/tododb/(.-)%.lua$"
      want[#want + 1] = (name == "init" and "tododb" or "tododb." .. name) .. " = " .. f
    end
    for name, src in pairs(spec.build.modules) do
      if type(src) == "string" then got[#got + 1] = name .. " = " .. src end
    end
    assert.same(sorted(want), sorted(got))
  end)

  it("installs every migration next to migrate.lua", function()
    local want, got = {}, {}
    for _, f in ipairs(lines "ls lua/tododb/migrations/*.sql") do
      want[#want + 1] = "tododb.migrations." .. f:match "([^/]+)%.sql$" .. " = " .. f
    end
    for name, src in pairs(spec.build.install.lua) do got[#got + 1] = name .. " = " .. src end
    assert.same(want, sorted(got))
  end)

  it("states the interpreters tododb builds for", function()
    assert.same({ "lua >= 5.1, < 5.5" }, spec.dependencies)
    assert.matches("Lua 5.4 and LuaJIT 2.1", spec.description.detailed, 1, true)
  end)
end)
