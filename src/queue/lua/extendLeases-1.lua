--[[
  extendLeases: moves the expiry of leases we still hold; never creates one (a member that was
  reaped or settled is not leased again).

  KEYS[1] leases  ZSET of the destination
  ARGV[1] until   ms, new lease expiry
  ARGV[2..] member, token, member, token, …  each member with its claim's lease token (lib/lease.lua)

  Returns one flag per member, in order: 1 still leased under its token (and so extended), 0 not
  (settled, or reaped and perhaps claimed again by another holder, whose lease is left as it is).
]]
--@include lease
local held = {}
for i = 2, #ARGV - 1, 2 do
  if leaseState(KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
    held[#held + 1] = 1
  else
    held[#held + 1] = 0
  end
end
return held
