--[[
  hold: puts a claimed entry back to wait, unattempted: its sender may not send now (the account is
  closed, or the reputation guard paused it). Unlike retry, the attempt count does not move, so a
  long hold neither uses up the retry schedule nor lands the copy on its longest delay afterwards.

  KEYS[1] leases  ZSET of the destination
  KEYS[2] ready   ZSET of the destination
  KEYS[3] rs      HASH delivery record of the recipient
  ARGV[1] member  "<msgId>:<idx>:<attempt>" as claimed (kept as it is)
  ARGV[2] now     ms
  ARGV[3] nextAt  ms, when to look again
  ARGV[4] enhanced  enhanced status code of the hold
  ARGV[5] response  why it waits
  ARGV[6] token   the claim's lease token (lib/lease.lua), as retry-3.lua takes it

  Returns 2 / 1 / 0 as ack-3.lua.
]]
--@include lease
local held = takeLease(KEYS[1], ARGV[1], ARGV[6])
if held == -1 then return 0 end
local reaped = redis.call('ZREM', KEYS[2], ARGV[1])
if held == 0 and reaped == 0 then return 0 end

redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'deferred', 'response', ARGV[5], 'enhanced', ARGV[4], 'nextAt', ARGV[3], 'updatedAt', ARGV[2])
redis.call('HDEL', KEYS[3], 'code', 'reason')
redis.call('PERSIST', KEYS[3])
if held == 1 then return 2 end
return 1
