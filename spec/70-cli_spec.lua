-- bin/tododb as a subprocess (always lua5.4, whatever runs the specs).
local S = require "support"
require "tododb"                 -- Connection methods, to see what exists

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read "*a"
  f:close()
  return s
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local TOP = (function()
  local p = assert(io.popen "pwd")
  local cwd = p:read "*l"
  p:close()
  local dir = debug.getinfo(1, "S").source:match "^@(.*)/spec/[^/]*$"
  if not dir or dir == "" or dir == "." then return cwd end
  return dir:sub(1, 1) == "/" and dir or cwd .. "/" .. dir
end)()

local BIN = TOP .. "/bin/tododb"

-- Environment of the CLI: the test database, no inherited module paths.
-- Under another interpreter (luajit) its build and preloads are not for lua5.4.
local ENV = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u TODODB_DEBUG"
  .. (S.interp ~= "lua5.4" and " -u LD_PRELOAD -u TDB_BUILD" or "")

-- run(args [, stdin [, url]]) -> status, stdout, stderr; by default as the
-- owner role, as an operator runs it (migrations need the owner).
local function run(args, stdin, url)
  local inf, outf, errf = os.tmpname(), os.tmpname(), os.tmpname()
  local f = assert(io.open(inf, "wb"))
  f:write(stdin or "")
  f:close()
  local words = {}
  for i, a in ipairs(args) do words[i] = q(a) end
  local cmd = ("%s DATABASE_URL=%s %s %s <%s >%s 2>%s; echo $?"):format(
    ENV, q(url or S.owner_url), q(BIN), table.concat(words, " "), q(inf), q(outf), q(errf))
  local p = assert(io.popen(cmd))
  local status = tonumber(p:read "*a")
  p:close()
  local out, err = read_file(outf), read_file(errf)
  os.remove(inf); os.remove(outf); os.remove(errf)
  return status, out, err
end

local function lines(s)
  local t = {}
  for l in s:gmatch "[^\n]+" do t[#t + 1] = l end
  return t
end

-- Asserts a failure: that status, one line on stderr, nothing on stdout.
local function assert_fails(status, want, out, err, pattern)
  assert.equal(want, status, err)
  assert.equal("", out)
  assert.equal(1, #lines(err), err)
  assert.matches("^tododb: ", err)
  if pattern then assert.matches(pattern, err, 1, true) end
end

local function runnable()
  local build = S.interp == "lua5.4" and os.getenv "TDB_BUILD" or "build/lua5.4"
  local f = io.open(TOP .. "/" .. build .. "/tododb/core.so", "rb")
  if not f then return false end
  f:close()
  return S.run "command -v lua5.4 >/dev/null 2>&1"
end

-- Tests that cannot run here are declared pending, with the reason.
local CAN = runnable()
local HAS_USERS = require("tododb.core").Connection.create_user ~= nil
local it_cli = CAN and it or function(name)
  pending(name .. " [pending: needs lua5.4 and build/lua5.4 (make)]")
end
local it_users = (CAN and HAS_USERS) and it or function(name)
  pending(name .. (CAN and " [pending: db:create_user is not implemented yet]"
                       or " [pending: needs lua5.4 and build/lua5.4 (make)]"))
end

describe("bin/tododb", function()
  local db
  before_each(function()
    db = S.owner()
    assert(db:exec "DROP OWNED BY current_user")
  end)
  after_each(function() if db then db:close() end end)

  it_cli("prints help with --help, -h and help, exit 0", function()
    for _, args in ipairs { { "--help" }, { "-h" }, { "help" } } do
      local status, out, err = run(args)
      assert.equal(0, status, err)
      assert.matches("usage: tododb", out, 1, true)
      for _, c in ipairs { "migrate", "user add", "user passwd", "user rm", "user list",
                           "todo add", "todo list", "todo done", "todo rm", "db start" } do
        assert.matches(c, out, 1, true)
      end
      assert.equal("", err)
    end
  end)

  it_cli("prints help for every command with --help, -h and help COMMAND", function()
    for _, c in ipairs { "migrate", "db", "user add", "user passwd", "user rm", "user list",
                         "todo add", "todo list", "todo done", "todo rm" } do
      local words = lines((c:gsub(" ", "\n")))
      local status, out = run { "help", words[1], words[2] }
      assert.equal(0, status, c)
      assert.matches("usage: tododb " .. c, out, 1, true)
      for _, flag in ipairs { "--help", "-h" } do
        local args = {}
        for _, w in ipairs(words) do args[#args + 1] = w end
        args[#args + 1] = flag
        local fstatus, fout = run(args)
        assert.equal(0, fstatus, c .. " " .. flag)
        assert.matches("usage: tododb " .. c, fout, 1, true)
      end
    end
  end)

  it_cli("exits 2 with usage on stderr when run without a command", function()
    local status, out, err = run {}
    assert.equal(2, status)
    assert.equal("", out)
    assert.matches("usage: tododb", err, 1, true)
  end)

  it_cli("exits 2 with one line on stderr for an unknown command or option", function()
    local status, out, err = run { "frobnicate" }
    assert_fails(status, 2, out, err, "unknown command 'frobnicate'")
    status, out, err = run { "user", "frob", "x" }
    assert_fails(status, 2, out, err, "unknown command 'user frob'")
    status, out, err = run { "migrate", "--bogus" }
    assert_fails(status, 2, out, err, "--bogus")
    status, out, err = run { "todo", "add", "a title" }
    assert_fails(status, 2, out, err, "--user")
    status, out, err = run { "todo", "list", "--user" }
    assert_fails(status, 2, out, err, "--user needs a value")
    status, out, err = run { "help", "nope" }
    assert_fails(status, 2, out, err, "nope")
  end)

  it_cli("migrates, reports nothing to do the second time, and shows the status", function()
    local status, out, err = run { "migrate", "--status" }
    assert.equal(0, status, err)
    assert.matches("0001_init%s+pending", out)
    status, out, err = run { "migrate" }
    assert.equal(0, status, err)
    local list = require("tododb.migrate").list
    assert.equal("applied " .. table.concat(list, "\napplied ") .. "\n", out)
    assert.equal(#list, S.count(db, "SELECT count(*) AS n FROM tododb_migrations"))
    status, out, err = run { "migrate" }
    assert.equal(0, status, err)
    assert.equal("schema is up to date\n", out)
    status, out, err = run { "migrate", "--status" }
    assert.equal(0, status, err)
    assert.matches("0001_init%s+applied %d%d%d%d%-%d%d%-%d%dT", out)
  end)

  it_cli("refuses to migrate over a changed migration, exit 1", function()
    assert(db:migrate())
    assert(db:query "UPDATE tododb_migrations SET checksum = 'x' WHERE version = 1")
    local status, out, err = run { "migrate" }
    assert_fails(status, 1, out, err, "0001_init")
    status, out, err = run { "migrate", "--status" }
    assert.equal(1, status)
    assert.matches("0001_init%s+CHANGED", out)
    assert.matches("0001_init", err, 1, true)
  end)

  it_cli("distributes a migrated schema on Citus, once, and shows where each table lives", function()
    assert(db:migrate())
    local status, out, err = run { "distribute" }
    if not S.citus then
      assert_fails(status, 1, out, err, "Citus is not installed")
      status, out, err = run { "distribute", "--status" }
      assert.equal(0, status, err)
      assert.equal("not distributed\n", out)
      return
    end
    assert.equal(0, status, err)
    assert.equal("distributed over 2 workers\n", out)
    status, out, err = run { "distribute" }
    assert.equal(0, status, err)
    assert.equal("already distributed (2 workers)\n", out)
    status, out, err = run { "distribute", "--status" }
    assert.equal(0, status, err)
    assert.matches("\ntodos%s+distributed\n", out)
    assert.matches("^todo_counters%s+distributed\n", out)
    assert.matches("\nusers%s+reference\n", out)
    assert.matches("\ndistributed\n$", out)
  end)

  it_cli("fails with one line, exit 1, for a bad URL, and never shows its password", function()
    local status, out, err = run({ "migrate" }, nil, "postgresql://u:Sup3rSecret@h/x?bogus=1")
    assert_fails(status, 1, out, err, "invalid")
    assert.is_nil(err:find("Sup3rSecret", 1, true))
    status, out, err = run { "--url", "host=127.0.0.1 port=1 password=Sup3rSecret bogus=1", "user", "list" }
    assert_fails(status, 1, out, err, "bogus")
    assert.is_nil(err:find("Sup3rSecret", 1, true))
  end)

  describe("user and todo commands", function()
    before_each(function()
      assert(db:migrate())
    end)

    it_users("add, list and remove users (password from stdin)", function()
      local status, out, err = run({ "user", "add", "Alice@Example.com" }, "correct horse\n")
      assert.equal(0, status, err)
      local id = out:match "^created user (%d+) alice@example%.com\n$"
      assert.is_not_nil(id, out)
      assert.is_not_nil(db:authenticate("alice@example.com", "correct horse"))
      status, out, err = run({ "user", "add", "alice@example.com" }, "another one\n")
      assert_fails(status, 1, out, err, "exists")
      status, out, err = run({ "user", "add", "bob@example.com" }, "short\n")
      assert_fails(status, 1, out, err, "password")
      status, out, err = run({ "user", "add", "bob@example.com" }, "")
      assert_fails(status, 1, out, err, "password")
      status, out, err = run({ "user", "add", "not an email" }, "long enough pw\n")
      assert_fails(status, 1, out, err)
      status, out, err = run({ "user", "add", "bob@example.com" }, "bobs password\r\n")
      assert.equal(0, status, err)
      assert.matches("^created user %d+ bob@example%.com\n$", out)
      assert.is_not_nil(db:authenticate("bob@example.com", "bobs password"))
      local s = db:session(assert(db:find_user "bob@example.com"))
      assert(s:create_todo { title = "one" })
      assert(s:create_todo { title = "two" })

      status, out, err = run { "user", "list" }
      assert.equal(0, status, err)
      local l = lines(out)
      assert.equal(3, #l)
      assert.matches("^ID%s+EMAIL%s+CREATED%s+TODOS$", l[1])
      assert.matches("^" .. id .. "%s+alice@example%.com%s+%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z%s+0$", l[2])
      assert.matches("^%d+%s+bob@example%.com%s+%S+%s+2$", l[3])

      status, out, err = run { "user", "rm", "BOB@example.com" }
      assert.equal(0, status, err)
      assert.equal("deleted user bob@example.com and 2 todos\n", out)
      local u, e = db:find_user "bob@example.com"
      assert.is_nil(u)
      assert.equal("not_found", e.code)
      status, out, err = run { "user", "rm", "bob@example.com" }
      assert_fails(status, 1, out, err, "no user with email bob@example.com")
    end)

    it_users("changes a password (old, then new from stdin)", function()
      assert(db:create_user { email = "carol@example.com", password = "old password" })
      local status, out, err = run({ "user", "passwd", "carol@example.com" }, "wrong password\nnew password\n")
      assert_fails(status, 1, out, err)
      assert.is_not_nil(db:authenticate("carol@example.com", "old password"))
      status, out, err = run({ "user", "passwd", "carol@example.com" }, "old password\n")
      assert_fails(status, 1, out, err, "password")
      status, out, err = run({ "user", "passwd", "carol@example.com" }, "old password\nnew password\n")
      assert.equal(0, status, err)
      assert.equal("password changed for carol@example.com\n", out)
      assert.is_nil(db:authenticate("carol@example.com", "old password"))
      assert.is_not_nil(db:authenticate("carol@example.com", "new password"))
      status, out, err = run({ "user", "passwd", "nobody@example.com" }, "a\nb\n")
      assert_fails(status, 1, out, err, "no user")
    end)

    it_users("adds, lists, completes and removes todos", function()
      assert(db:create_user { email = "dave@example.com", password = "dave password" })
      assert(db:create_user { email = "eve@example.com", password = "eve's password" })
      local U = { "--user", "dave@example.com" }
      local function todo(cmd, ...)
        local args = { "todo", cmd, U[1], U[2], ... }
        return run(args)
      end
      local status, out, err = todo("add", "Buy milk", "--description", "2 litres")
      assert.equal(0, status, err)
      local milk = out:match "^added todo (%d+): Buy milk\n$"
      assert.is_not_nil(milk, out)
      status, out, err = todo("add", "Call Mom")
      assert.equal(0, status, err)
      local mom = out:match "^added todo (%d+): Call Mom\n$"
      status, out, err = todo("add", "   ")
      assert_fails(status, 1, out, err, "title")
      status, out, err = run { "todo", "add", "--user", "nobody@example.com", "x" }
      assert_fails(status, 1, out, err, "no user")

      status, out, err = todo "list"
      assert.equal(0, status, err)
      local l = lines(out)
      assert.equal(3, #l)                               -- newest first, description below
      assert.matches("^%s*" .. mom .. "%s+%[ %]%s+Call Mom$", l[1])
      assert.matches("^%s*" .. milk .. "%s+%[ %]%s+Buy milk$", l[2])
      assert.matches("^%s+2 litres$", l[3])

      status, out, err = todo("done", milk)
      assert.equal(0, status, err)
      assert.equal("done: " .. milk .. " Buy milk\n", out)
      status, out = todo("list", "--done")
      assert.equal(0, status)
      assert.matches("^%s*" .. milk .. "%s+%[x%]%s+Buy milk\n", out)
      assert.is_nil(out:find("Call Mom", 1, true))
      status, out = todo("list", "--open")
      assert.equal(0, status)
      assert.matches("^%s*" .. mom .. "%s+%[ %]%s+Call Mom\n$", out)
      status, out = todo("list", "--search", "MOM")
      assert.equal(0, status)
      assert.matches("^%s*" .. mom .. "%s+%[ %]%s+Call Mom\n$", out)
      status, out, err = todo("list", "--done", "--open")
      assert_fails(status, 2, out, err)

      -- Another user's todo is not there for eve.
      status, out, err = run { "todo", "done", "--user", "eve@example.com", mom }
      assert_fails(status, 1, out, err, "not found")
      status, out, err = run { "todo", "rm", "--user", "eve@example.com", mom }
      assert_fails(status, 1, out, err, "not found")
      status, out, err = run { "todo", "list", "--user", "eve@example.com" }
      assert.equal(0, status, err)
      assert.equal("", out)

      status, out, err = todo("done", "x1")
      assert_fails(status, 2, out, err, "ID")
      status, out, err = todo("rm", mom)
      assert.equal(0, status, err)
      assert.equal("deleted todo " .. mom .. "\n", out)
      status, out, err = todo("rm", mom)
      assert_fails(status, 1, out, err, "not found")
      status, out = todo "list"
      assert.equal(0, status)
      assert.equal(2, #lines(out))

      status, out = run { "user", "list" }
      assert.equal(0, status)
      assert.matches("dave@example%.com%s+%S+%s+1\n", out)
      assert.matches("eve@example%.com%s+%S+%s+0\n", out)
    end)
  end)
end)

describe("bin/tododb db", function()
  it_cli("prints the embedded database URL when it runs, else fails with one line", function()
    local status, out, err = run { "db", "url" }
    if status == 0 then
      assert.matches("^postgresql://", out)
    else
      assert.equal(1, status)
      assert.matches("not running", err, 1, true)
    end
    status, out, err = run { "db", "restart" }
    assert_fails(status, 2, out, err, "restart")
  end)
end)

describe("tododb.cli.execute", function()
  local cli = require "tododb.cli"

  it("returns a shell command's exit status, 0 for success", function()
    assert.equal(0, cli.execute "true")
    assert.equal(1, cli.execute "false")
    assert.equal(3, cli.execute "exit 3")
    assert.equal(0, cli.execute "test -d /")
  end)

  it("returns a non-zero status for a command killed by a signal", function()
    assert.not_equal(0, cli.execute "kill -TERM $$")
  end)
end)
