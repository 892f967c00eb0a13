-- tododb.cli: the `tododb` command line (bin/tododb).
-- main(argv) -> exit status: 0 ok, 1 failure, 2 usage error. Every failure
-- is one line on stderr; results go to stdout.
local tododb = require "tododb"

local M = {}

local PROG = "tododb"

-- ---- output and failures -------------------------------------------------

local out, err = io.stdout, io.stderr

local function say(fmt, ...) out:write(fmt:format(...), "\n") end

-- One line, whatever the message held (libpq messages span several).
local function oneline(s)
  return (tostring(s):gsub("%s*\n%s*", " "):gsub("%s+$", ""))
end

-- Failures travel as tables so that main can tell them from bugs.
local Failure = {}

local function usage_error(fmt, ...)
  error(setmetatable({ status = 2, message = fmt:format(...) }, Failure), 0)
end

local function fail(msg)
  error(setmetatable({ status = 1, message = oneline(msg) }, Failure), 0)
end

-- Returns the value or fails with the error of an API call (nil, err).
local function check(v, e, ...)
  if v == nil then fail(e) end
  return v, e, ...
end

-- ---- command table ---------------------------------------------------------

-- Each command: usage, summary, options (name -> "flag" | "value"), run(o, args).
local commands = {}
local order = {}

local function command(name, def)
  commands[name] = def
  order[#order + 1] = name
end

local GLOBAL_HELP = [[
usage: tododb [--url URL] COMMAND [ARGS]

Commands:
%s
Options on every command:
  --url URL    the database (default: $DATABASE_URL, else the embedded one)
  -h, --help   help for the command

Exit status: 0 ok, 1 failure, 2 usage error.
Run `tododb help COMMAND` for one command.]]

local groups = { user = { "add", "passwd", "rm", "list" }, todo = { "add", "list", "done", "rm" } }

local function group_usage(g)
  local lines = {}
  for _, sub in ipairs(groups[g]) do
    local c = commands[g .. " " .. sub]
    lines[#lines + 1] = "  tododb " .. c.usage
    lines[#lines + 1] = "      " .. c.summary
  end
  return "usage:\n" .. table.concat(lines, "\n")
end

local function help_text(name)
  if name and groups[name] then return group_usage(name) end
  if name and commands[name] then
    local c = commands[name]
    return ("usage: tododb %s\n\n%s\n%s"):format(c.usage, c.summary, c.details or "")
  end
  local lines = {}
  for _, n in ipairs(order) do
    local c = commands[n]
    if #c.usage > 34 then
      lines[#lines + 1] = "  " .. c.usage
      lines[#lines + 1] = ("  %-34s %s"):format("", c.summary)
    else
      lines[#lines + 1] = ("  %-34s %s"):format(c.usage, c.summary)
    end
  end
  return GLOBAL_HELP:format(table.concat(lines, "\n") .. "\n")
end

-- Splits argv into options and positional arguments by the spec opts.
-- `--name value`, `--name=value`, `-h`; `--` ends the options.
local function parse(argv, first, opts, cmd)
  local o, args, i = {}, {}, first
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do args[#args + 1] = argv[j] end
      break
    elseif a == "-h" then
      o.help = true
    elseif a:sub(1, 2) == "--" and #a > 2 then
      local name, value = a:match "^%-%-([^=]+)=(.*)$"
      name = name or a:sub(3)
      local kind = name == "help" and "flag" or name == "url" and "value" or opts[name]
      if not kind then usage_error("%s: unknown option --%s", cmd, name) end
      if kind == "flag" then
        if value then usage_error("%s: --%s takes no value", cmd, name) end
        o[name] = true
      else
        if not value then
          i = i + 1
          value = argv[i]
          if value == nil then usage_error("%s: --%s needs a value", cmd, name) end
        end
        o[name] = value
      end
    elseif a:sub(1, 1) == "-" and #a > 1 then
      usage_error("%s: unknown option %s", cmd, a)
    else
      args[#args + 1] = a
    end
    i = i + 1
  end
  return o, args
end

-- ---- helpers over the API ------------------------------------------------

local function connect(o, opts)
  local db, e = tododb.connect(o.url, opts)
  if not db then fail(e) end
  return db
end

-- cli.execute(cmd) -> exit status of a shell command (0 = success), from
-- os.execute's results on Lua 5.4 (true|nil, "exit"|"signal", n) and on
-- LuaJIT (the same, or a bare wait status on builds without 5.2 compat).
function M.execute(cmd)
  local a, how, code = os.execute(cmd)
  if type(a) == "number" then return a >= 256 and math.floor(a / 256) or a end
  if how == "exit" and type(code) == "number" then return code end
  if a == true then return 0 end
  return 1
end

local function isatty() return M.execute "test -t 0" == 0 end

-- Reads a password: from the terminal without echo, else one line of stdin.
local function read_password(prompt)
  local line
  if isatty() then
    err:write(prompt)
    err:flush()
    os.execute "stty -echo 2>/dev/null"
    local ok, v = pcall(io.read, "*l")
    os.execute "stty echo 2>/dev/null"
    err:write "\n"
    line = ok and v or nil
  else
    line = io.read "*l"
  end
  if line == nil then fail("no password given (" .. prompt:gsub(":%s*$", "") .. ")") end
  return (line:gsub("\r$", ""))
end

local function new_password(prompt)
  local pw = read_password(prompt)
  if isatty() and read_password "Repeat the password: " ~= pw then
    fail "the passwords do not match"
  end
  return pw
end

local function user_by_email(db, email)
  local u, e = db:find_user(email)
  if not u then
    if e and e.code == "not_found" then fail("no user with email " .. email) end
    fail(e)
  end
  return u
end

local function one_arg(args, cmd, what)
  if #args ~= 1 then usage_error("%s: expected %s (see 'tododb help %s')", cmd, what, cmd) end
  return args[1]
end

local function need_user(o, cmd)
  if not o.user then usage_error("%s: --user EMAIL is required", cmd) end
  return o.user
end

local function todo_id(s, cmd)
  if not s:match "^%d+$" then usage_error("%s: ID must be a positive integer, got '%s'", cmd, s) end
  return s
end

-- Prints rows (arrays of strings) as aligned columns under a header.
local function columns(header, rows)
  local w = {}
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do w[i] = math.max(w[i] or 0, #v) end
  end
  for i, v in ipairs(header) do w[i] = math.max(w[i] or 0, #v) end
  local function line(r)
    local cells = {}
    for i, v in ipairs(r) do
      cells[i] = i == #r and v or v .. (" "):rep(w[i] - #v)
    end
    say("%s", table.concat(cells, "  "))
  end
  line(header)
  for _, r in ipairs(rows) do line(r) end
end

-- ---- commands --------------------------------------------------------------

command("help", {
  usage = "help [COMMAND]",
  summary = "show help for all commands or one",
  options = {},
  run = function(_, args)
    local name = table.concat(args, " ")
    if name ~= "" and not commands[name] and not groups[name] then
      usage_error("help: unknown command '%s'", name)
    end
    say("%s", help_text(name ~= "" and name or nil))
    return 0
  end,
})

-- A command on the schema: def.status(db) with `--status`, else
-- def.apply(db); either prints and may return a failure message, shown after
-- the connection closed. Schema changes may take long: no call time limit.
local function schema_command(name, def)
  def.options = { status = "flag" }
  def.run = function(o, args)
    if #args > 0 then usage_error("%s: unexpected argument '%s'", name, args[1]) end
    local db = connect(o, { timeout = false })
    local failure = (o.status and def.status or def.apply)(db)
    db:close()
    if failure then fail(failure) end
    return 0
  end
  command(name, def)
end

schema_command("migrate", {
  usage = "migrate [--status]",
  summary = "bring the schema up to date (or show migration status)",
  details = [[
Applies the SQL migrations that are not yet applied, each in its own
locked transaction; safe to run concurrently and again.
  --status   list the migrations with applied/pending and checksum state;
             exit status 1 when an applied migration was changed
]],
  status = function(db)
    local bad
    for _, m in ipairs(check(db:migration_status())) do
      local state = not m.applied and "pending"
        or m.checksum_ok and "applied " .. tostring(m.applied_at)
        or "CHANGED since applied " .. tostring(m.applied_at)
      if m.applied and not m.checksum_ok then bad = m.name end
      say("%04d  %-24s %s", m.version, m.name, state)
    end
    return bad and "migration " .. bad .. " was changed after it was applied"
  end,
  apply = function(db)
    local res = check(db:migrate())
    if #res.applied == 0 then say "schema is up to date"
    else for _, name in ipairs(res.applied) do say("applied %s", name) end end
  end,
})

schema_command("distribute", {
  usage = "distribute [--status]",
  summary = "distribute the migrated schema over a Citus cluster",
  details = [[
Checks that Citus is installed and every worker answers, that every
migration is applied, then makes users a reference table and distributes
the tables keyed by user_id by user_id (co-located), in one locked
transaction recorded in tododb_migrations; running it again places only the
tables added since (by later migrations), else does nothing.
Connect as the role that owns the tables and the database (TODODB_OWNER_URL).
  --status   show each table's placement
]],
  status = function(db)
    local st = check(db:distribution_status())
    local names = {}
    for name in pairs(st.tables) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do say("%-24s %s", name, st.tables[name]) end
    say(st.distributed and "distributed" or "not distributed")
  end,
  apply = function(db)
    local res = check(db:distribute())
    say(res.distributed and "distributed over %d workers" or "already distributed (%d workers)", res.workers)
  end,
})

command("db", {
  usage = "db start|stop|status|url [--admin]",
  summary = "control the embedded development database",
  details = [[
Wraps scripts/devdb of a source checkout: a throwaway PostgreSQL cluster
under .tododb/ (unix socket only). `db url --admin` prints the superuser URL.
]],
  options = { admin = "flag" },
  run = function(o, args)
    local sub = one_arg(args, "db", "start, stop, status or url")
    if sub ~= "start" and sub ~= "stop" and sub ~= "status" and sub ~= "url" then
      usage_error("db: unknown subcommand '%s' (start, stop, status, url)", sub)
    end
    if o.admin and sub ~= "url" then usage_error "db: --admin goes with `db url` only" end
    local script = M.devdb()
    if not script then fail "the embedded database needs a source checkout (scripts/devdb not found)" end
    out:flush()
    local cmd = ("'%s' %s%s"):format(script:gsub("'", "'\\''"), sub, o.admin and " --admin" or "")
    return M.execute(cmd) == 0 and 0 or 1
  end,
})

-- A command on the database: def.args(args, o, name) checks the arguments
-- (usage errors come before any connection), then def.act(db, a, o) runs with
-- the connection, a = what def.args returned; the connection closes after it.
local function db_command(name, def)
  def.options = def.options or {}
  def.run = function(o, args)
    local a = def.args(args, o, name)
    local db = connect(o)
    def.act(db, a, o)
    db:close()
    return 0
  end
  command(name, def)
end

-- A command on one user's todos: `--user EMAIL` is required and def.act(s, a, o)
-- gets that user's session instead of the connection.
local function todo_command(name, def)
  local args, act = def.args, def.act
  def.options = def.options or {}
  def.options.user = "value"
  def.args = function(argv, o) return { email = need_user(o, name), arg = args(argv, o, name) } end
  def.act = function(db, a, o) act(check(db:session(user_by_email(db, a.email))), a.arg, o) end
  db_command(name, def)
end

local function no_args(args, _, name)
  if #args > 0 then usage_error("%s: unexpected argument '%s'", name, args[1]) end
end

local function email_arg(args, _, name) return one_arg(args, name, "EMAIL") end

local function id_arg(args, _, name) return todo_id(one_arg(args, name, "ID"), name) end

db_command("user add", {
  usage = "user add EMAIL",
  summary = "create a user (password from the terminal or stdin)",
  details = "The password is read without echo from a terminal, else as one line of stdin.\n",
  args = email_arg,
  act = function(db, email)
    local u = check(db:create_user { email = email, password = new_password "Password: " })
    say("created user %s %s", tostring(u.id), u.email)
  end,
})

db_command("user passwd", {
  usage = "user passwd EMAIL",
  summary = "change a password (old, then new)",
  details = "Reads the old password, then the new one: without echo from a terminal,\n"
    .. "else one line each from stdin.\n",
  args = email_arg,
  act = function(db, email)
    local u = user_by_email(db, email)
    local old = read_password "Old password: "
    check(db:change_password(u.id, old, new_password "New password: "))
    say("password changed for %s", u.email)
  end,
})

db_command("user rm", {
  usage = "user rm EMAIL",
  summary = "delete a user and all their todos",
  args = email_arg,
  act = function(db, email)
    local u = user_by_email(db, email)
    local n = check(db:delete_user(u.id))
    say("deleted user %s and %s todo%s", u.email, tostring(n), n == 1 and "" or "s")
  end,
})

db_command("user list", {
  usage = "user list",
  summary = "list users with their number of todos",
  args = no_args,
  act = function(db)
    local rows, after = {}, nil
    repeat
      local page = check(db:list_users { after = after, limit = 1000 })
      for _, u in ipairs(page) do
        local n = check(db:session(u):count_todos {})
        rows[#rows + 1] = { tostring(u.id), u.email, u.created_at, tostring(n) }
        after = u.id
      end
    until #page < 1000
    columns({ "ID", "EMAIL", "CREATED", "TODOS" }, rows)
  end,
})

todo_command("todo add", {
  usage = "todo add --user EMAIL TITLE [--description D]",
  summary = "add a todo for a user",
  options = { description = "value" },
  args = function(args, _, name) return one_arg(args, name, "one TITLE (quote it)") end,
  act = function(s, title, o)
    local t = check(s:create_todo { title = title, description = o.description })
    say("added todo %s: %s", tostring(t.id), t.title)
  end,
})

todo_command("todo list", {
  usage = "todo list --user EMAIL [--done|--open] [--search S]",
  summary = "list a user's todos, newest first",
  details = [[
  --done       only completed todos
  --open       only open todos
  --search S   only todos whose title contains S (case-insensitive)
]],
  options = { done = "flag", open = "flag", search = "value" },
  args = function(args, o, name)
    no_args(args, o, name)
    if o.done and o.open then usage_error "todo list: --done and --open exclude each other" end
  end,
  act = function(s, _, o)
    local completed
    if o.done then completed = true elseif o.open then completed = false end
    local after, n = nil, 0
    repeat
      local page = check(s:list_todos { completed = completed, search = o.search,
                                        limit = 200, after = after })
      for _, t in ipairs(page.items) do
        n = n + 1
        say("%6s  [%s]  %s", tostring(t.id), t.completed and "x" or " ", t.title)
        if t.description and t.description ~= "" then
          say("              %s", (t.description:gsub("\n", "\n              ")))
        end
      end
      after = page.next
    until not after
    if n == 0 then err:write "no todos\n" end
  end,
})

todo_command("todo done", {
  usage = "todo done --user EMAIL ID", summary = "mark a todo as completed", args = id_arg,
  act = function(s, id)
    local t = check(s:update_todo(id, { completed = true }))
    say("done: %s %s", tostring(t.id), t.title)
  end,
})

todo_command("todo rm", {
  usage = "todo rm --user EMAIL ID", summary = "delete a todo", args = id_arg,
  act = function(s, id) check(s:delete_todo(id)); say("deleted todo %s", id) end,
})

-- ---- entry point -------------------------------------------------------------

-- scripts/devdb of the checkout this file lives in, or nil.
function M.devdb()
  local top = debug.getinfo(1, "S").source:match "^@(.*)/lua/tododb/cli%.lua$"
  local path = (top or ".") .. "/scripts/devdb"
  local f = top and io.open(path, "r")
  if not f then return nil end
  f:close()
  return path
end

-- Finds the command named by argv (one or two words) from index i.
local function find(argv, i)
  local a, b = argv[i], argv[i + 1]
  if a and b and commands[a .. " " .. b] then return a .. " " .. b, i + 2 end
  if a and commands[a] then return a, i + 1 end
  return nil
end

local function dispatch(argv)
  -- Global options before the command: --url URL, -h/--help, --version.
  local i, url = 1, nil
  while argv[i] and argv[i]:sub(1, 1) == "-" do
    local a = argv[i]
    if a == "-h" or a == "--help" then say("%s", help_text()) return 0
    elseif a == "--version" then say("%s", tododb._VERSION) return 0
    elseif a == "--url" then
      url = argv[i + 1]
      if not url then usage_error "--url needs a value" end
      i = i + 2
    elseif a:match "^%-%-url=" then url = a:sub(7); i = i + 1
    else usage_error("unknown option %s (see 'tododb help')", a) end
  end
  if not argv[i] then
    err:write(help_text(), "\n")
    return 2
  end
  local name, first = find(argv, i)
  if not name then
    local g = groups[argv[i]]
    if g then
      if argv[i + 1] == nil or argv[i + 1] == "-h" or argv[i + 1] == "--help" then
        local to = argv[i + 1] and out or err
        to:write(group_usage(argv[i]), "\n")
        return argv[i + 1] and 0 or 2
      end
      usage_error("unknown command '%s %s' (see 'tododb help')", argv[i], argv[i + 1])
    end
    usage_error("unknown command '%s' (see 'tododb help')", argv[i])
  end
  local cmd = commands[name]
  local o, args = parse(argv, first, cmd.options, name)
  o.url = o.url or url
  if o.help then say("%s", help_text(name)) return 0 end
  return cmd.run(o, args)
end

-- main(argv [, io]) -> exit status. io: { stdout =, stderr = } for tests.
function M.main(argv, streams)
  out = streams and streams.stdout or io.stdout
  err = streams and streams.stderr or io.stderr
  local ok, res = pcall(dispatch, argv or {})
  if ok then return res or 0 end
  if getmetatable(res) == Failure then
    err:write(PROG, ": ", res.message, "\n")
    return res.status
  end
  err:write(PROG, ": internal error: ", oneline(res), "\n")
  if os.getenv "TODODB_DEBUG" then err:write(debug.traceback(), "\n") end
  return 1
end

return M
