-- luarocks make rockspec/tododb-scm-1.rockspec PQ_INCDIR="$(pg_config --includedir)"
-- (Debian/Ubuntu keep libpq-fe.h in /usr/include/postgresql, which luarocks
-- does not search by itself; elsewhere PQ_INCDIR can usually be left out.)
rockspec_format = "3.0"
package = "tododb"
version = "scm-1"

source = {
  -- Placeholder until the repository has a public home; `luarocks make`
  -- builds from the checkout and never fetches it.
  url = "git+https://example.invalid/tododb.git",
}

description = {
  summary = "Data layer of a multi-user todo application: a C Lua module over libpq and libsodium",
  detailed = [[
tododb keeps users and their todos in PostgreSQL (row-level security,
argon2id passwords, pipelined statements) for Lua 5.4 and LuaJIT 2.1
(OpenResty, nginx's Lua module) only, with a migration runner and the
`tododb` command line.]],
  license = "MIT",
}

-- Supported: Lua 5.4 and LuaJIT 2.1 (which luarocks sees as Lua 5.1), nothing
-- else. A luarocks constraint cannot say "5.4 or LuaJIT", so this one admits
-- 5.1 to 5.4; PUC-Rio Lua 5.1, 5.2 and 5.3 lack C API functions the module
-- uses, and csrc/compat.h refuses 5.2 and 5.3 when compiling.
dependencies = {
  "lua >= 5.1, < 5.5",
}

external_dependencies = {
  PQ = { header = "libpq-fe.h", library = "pq" },
  SODIUM = { header = "sodium.h", library = "sodium" },
}

build = {
  type = "builtin",
  modules = {
    ["tododb.core"] = {
      -- Every csrc/*.c (spec/90-rockspec_spec.lua fails when one is missing).
      sources = {
        "csrc/conn.c", "csrc/connect.c", "csrc/core.c", "csrc/decode.c", "csrc/error.c",
        "csrc/identity.c", "csrc/json.c", "csrc/object.c", "csrc/password.c",
        "csrc/session.c", "csrc/sql.c", "csrc/todo.c", "csrc/token.c", "csrc/user.c",
        "csrc/validate.c",
      },
      defines = { "_POSIX_C_SOURCE=200809L" },
      incdirs = { "csrc", "$(PQ_INCDIR)", "$(SODIUM_INCDIR)" },
      libdirs = { "$(PQ_LIBDIR)", "$(SODIUM_LIBDIR)" },
      libraries = { "pq", "sodium", "m" },
    },
    ["tododb"] = "lua/tododb/init.lua",
    ["tododb.migrate"] = "lua/tododb/migrate.lua",
    ["tododb.distribute"] = "lua/tododb/distribute.lua",
    ["tododb.cli"] = "lua/tododb/cli.lua",
    ["tododb.nginx"] = "lua/tododb/nginx.lua",
    ["tododb.testing"] = "lua/tododb/testing.lua",
  },
  install = {
    -- Next to migrate.lua, which finds its migrations relative to itself.
    lua = {
      ["tododb.migrations.0001_init"] = "lua/tododb/migrations/0001_init.sql",
      ["tododb.migrations.0002_identity"] = "lua/tododb/migrations/0002_identity.sql",
      ["tododb.migrations.0003_distributable"] = "lua/tododb/migrations/0003_distributable.sql",
      ["tododb.migrations.0004_identities"] = "lua/tododb/migrations/0004_identities.sql",
      ["tododb.migrations.0005_runtime_grants"] = "lua/tododb/migrations/0005_runtime_grants.sql",
    },
    bin = { tododb = "bin/tododb" },
  },
}
