-- The line of a throttle scope's connection slots (acquireConnection-1.lua, yieldConnection-1.lua):
-- "<scope>:waiting" (ZSET domain → when it began to wait) and "<scope>:waitseen" (ZSET domain → when
-- it last asked), named as the slot set "<scope>:conns" with 'conns' replaced (as lib/owed.lua finds
-- "owed"), so a script declares only the slot set and stays in its slot.
local function slotLine(conns)
  local base = string.sub(conns, 1, -6)
  return base .. 'waiting', base .. 'waitseen'
end
