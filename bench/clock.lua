-- bench/clock.lua: lua-system, the wall clock of the Lua benchmarks (or the
-- script stops with a message). From a script in bench/:
--   package.path = (arg[0]:match "^(.*)/" or ".") .. "/?.lua;" .. package.path
--   local system = require "clock"      -- system.monotime, gettime, sleep
local ok, system = pcall(require, "system")
if not ok or not system.monotime then
  io.stderr:write((arg and arg[0] or "bench"), ": needs lua-system for a wall clock",
                  " (apt-get install lua-system)\n")
  os.exit(2)
end
return system
