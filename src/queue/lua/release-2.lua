--[[
  release: gives claimed entries back unattempted (graceful shutdown): each member still leased
  moves to ready, due now, with its attempt count unchanged.

  KEYS[1] leases  ZSET of the destination
  KEYS[2] ready   ZSET of the destination
  ARGV[1] now     ms
  ARGV[2..] member, token, member, token, …  each member with its claim's lease token (lib/lease.lua)

  Returns the number of entries moved (members no longer leased under their token are skipped: they
  were settled, or reaped and perhaps claimed again).
]]
--@include lease
local moved = 0
for i = 2, #ARGV - 1, 2 do
  if takeLease(KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
