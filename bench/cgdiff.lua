-- bench/cgdiff.lua: instructions per operation from two callgrind runs of the
-- same driver with different operation counts (the difference cancels start-up,
-- id loading and warm-up).
--   lua5.4 bench/cgdiff.lua SMALL.out LARGE.out EXTRA_OPS [TOP]
-- Prints: "TOTAL <Ir/op>", "OBJ <Ir/op> <object>" and "FN <Ir/op> <function> <object>"
-- lines (exclusive Ir), largest first.
local small, large, nops, ntop = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4] or "12")

local function load(file)
  local p = assert(io.popen("callgrind_annotate --threshold=100 '" .. file .. "' 2>/dev/null"))
  local total, fns = 0, {}
  for l in p:lines() do
    local ir, rest = l:match "^%s*([%d,]+)%s+%(%s*[%d%.]+%%%)%s+(.*)$"
    if ir then
      ir = tonumber((ir:gsub(",", "")))
      if rest == "PROGRAM TOTALS" then total = ir
      else fns[rest] = (fns[rest] or 0) + ir end
    end
  end
  p:close()
  return total, fns
end

local t0, f0 = load(small)
local t1, f1 = load(large)
print(("TOTAL\t%.0f"):format((t1 - t0) / nops))

local objs, fns = {}, {}
for k, v in pairs(f1) do
  local d = (v - (f0[k] or 0)) / nops
  local fn, obj = k:match "^(.-)%s+%[(.*)%]$"
  fn, obj = fn or k, obj or "?"
  obj = obj:match "[^/]+$"
  fn = fn:match "^[^:]*:(.*)$" or fn                -- drop the source file
  objs[obj] = (objs[obj] or 0) + d
  fns[#fns + 1] = { d = d, fn = fn, obj = obj }
end
local list = {}
for o, d in pairs(objs) do list[#list + 1] = { o = o, d = d } end
table.sort(list, function(a, b) return a.d > b.d end)
for _, x in ipairs(list) do
  if x.d >= 50 then print(("OBJ\t%.0f\t%s"):format(x.d, x.o)) end
end
table.sort(fns, function(a, b) return a.d > b.d end)
for i = 1, math.min(ntop, #fns) do
  print(("FN\t%.0f\t%s\t%s"):format(fns[i].d, fns[i].fn, fns[i].obj))
end
