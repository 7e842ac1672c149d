--[[
  extendLeases: moves the expiry of leases we still hold; never creates one (a member that was
  reaped or settled is not leased again).

  KEYS[1] leases  ZSET of the destination
  ARGV[1] until   ms, new lease expiry
  ARGV[2..] members

  Returns one flag per member, in order: 1 still leased (and so extended), 0 not (reaped or settled).
]]
local held = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
    held[i - 1] = 1
  else
    held[i - 1] = 0
  end
end
return held
