-- Cursor keys: with a per-deployment secret only the deployment can make a
-- cursor; rotation accepts the previous key while signing with the new one.
local S = require "support"
local tododb = require "tododb"

local KEY_A = ("a"):rep(32)
local KEY_B = "a different secret of at least 32 bytes"

describe("cursor keys", function()
  local db, alice
  before_each(function()
    db = S.fresh()
    alice = assert(db:create_user { email = "alice@example.com", password = "alice password" })
    assert(db:session(alice):create_todos { { title = "1" }, { title = "2" }, { title = "3" } })
  end)
  after_each(function() db:close() end)

  -- A first page's cursor made by a connection with these options.
  local function cursor(opts)
    local c = S.connect(opts)
    local page = assert(c:session(alice):list_todos { limit = 1 })
    c:close()
    return assert(page.next)
  end
  -- The second page through a connection with these options, or nil, err.
  local function next_page(cur, opts)
    local c = S.connect(opts)
    local page, err = c:session(alice):list_todos { limit = 1, after = cur }
    c:close()
    return page, err
  end

  it("a cursor made under one deployment's key is refused under another and without one", function()
    local cur = cursor { cursor_key = KEY_A }
    assert.equal(2, assert(next_page(cur, { cursor_key = KEY_A })).items[1].id)
    for _, opts in ipairs { { cursor_key = KEY_B }, {} } do
      local page, err = next_page(cur, opts)
      assert.is_nil(page)
      assert.equal("invalid", err.code)
      assert.equal("after", err.field)
    end
    -- and one made without a key (the public checksum) is refused under a key
    local page, err = next_page(cursor {}, { cursor_key = KEY_A })
    assert.is_nil(page)
    assert.equal("invalid", err.code)
  end)

  it("rotation: { new, old } signs with the new key and still accepts the old one", function()
    local old = cursor { cursor_key = KEY_A }
    assert(next_page(old, { cursor_key = { KEY_B, KEY_A } }))
    local new = cursor { cursor_key = { KEY_B, KEY_A } }
    assert(next_page(new, { cursor_key = KEY_B }))
    assert.is_nil(next_page(new, { cursor_key = KEY_A }))
  end)

  it("comes from TODODB_CURSOR_KEY (and _PREVIOUS) when the option is absent", function()
    local old = cursor { cursor_key = KEY_A }
    local script = ([[
      local tododb = require "tododb"
      local db = assert(tododb.connect(%q, { pwhash = "min" }))
      local page, err = db:session(%s):list_todos { limit = 1, after = %q }
      print(page and "accepted" or err.code)
    ]]):format(S.url, tostring(alice.id), old)
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(script)
    f:close()
    local function run(env)
      return S.capture(("%s %s '%s' 2>&1"):format(env, S.interp, file)):match "%S+"
    end
    assert.equal("accepted", run("TODODB_CURSOR_KEY='" .. KEY_A .. "'"))
    assert.equal("invalid", run("TODODB_CURSOR_KEY='" .. KEY_B .. "'"))
    assert.equal("accepted", run(("TODODB_CURSOR_KEY='%s' TODODB_CURSOR_KEY_PREVIOUS='%s'"):format(KEY_B, KEY_A)))
    assert.equal("invalid", run("env -u TODODB_CURSOR_KEY"))
    assert.matches("at least 32 bytes", S.capture(("TODODB_CURSOR_KEY=short %s '%s' 2>&1"):format(S.interp, file)))
    os.remove(file)
  end)

  it("raises for a key that is too short or not a string", function()
    for _, bad in ipairs { "short", 42, { "short" }, {}, { KEY_A, KEY_A, KEY_A, KEY_A, KEY_A } } do
      assert.has_error(function() tododb.connect(S.url, { cursor_key = bad }) end)
    end
  end)
end)
