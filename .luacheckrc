-- luacheck configuration (`make lint`). Code runs on Lua 5.4 and LuaJIT 2.1:
-- "max" knows the globals of every Lua version; each file guards its own use.
std = "max"
max_line_length = 120

-- busted's describe/it/assert/... in the specs.
files["spec"] = { std = "max+busted" }

-- lua-nginx-module's `ngx` API where the code runs inside nginx.
-- run_worker_thread (lua-nginx-module 0.10.21) is newer than luacheck's list.
local ngx_thread = { ngx = { fields = { "run_worker_thread" } } }
files["lua/tododb/nginx.lua"] = { std = "max+ngx_lua", read_globals = ngx_thread }
files["examples/nginx"] = { std = "max+ngx_lua" }
-- The benchmark's pgmoon baseline runs in nginx; bench/wrk.lua is a wrk
-- script (wrk calls the globals it defines: init, request, done).
files["bench/pgmoon"] = { std = "max+ngx_lua" }
files["bench/wrk.lua"] = { globals = { "init", "request", "done" }, read_globals = { "wrk" } }
