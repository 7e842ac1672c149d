--[[
  markDelivered: notes a 250 for a copy in its address's soft-bounce history (recordSoftBounce-1.lua),
  which ends the address's run of soft bounces unless this copy bounces later by mail. An address
  with no history is left alone: no key is written for the common case.

  KEYS[1] history  ZSET (recordSoftBounce-1.lua)
  ARGV[1] member   "<msgId>:<idx>"
  ARGV[2] now      ms

  Returns 1 when marked, 0 when the address has no history.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), 'd:' .. ARGV[1])
return 1
