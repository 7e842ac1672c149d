--[[
  markDelivered: notes a 250 for copies in their addresses' soft-bounce histories (recordSoftBounce-1.lua),
  which ends an address's run of soft bounces unless that copy bounces later by mail. An address with
  no history is left alone: no key is written for the common case. The file name says 1 key: one
  copy's; on a single Redis server the dispatcher sends many copies' marks in one call
  (markDeliveredKeys), one key each, their ARGV pairs in the same order.

  KEYS[i]      history  ZSET (recordSoftBounce-1.lua) of copy i's address
  ARGV[2i-1]   member   "<msgId>:<idx>" of copy i
  ARGV[2i]     now      ms

  A copy whose own soft bounce is in the history already (its DSN came back, or was processed,
  before this mark was written: marks wait up to 50 ms in the dispatcher) is not marked: its 250
  was no delivery, and the mark would end the run its bounce belongs to.

  Returns how many copies were marked (those whose address has a history).
]]
local marked = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 and not redis.call('ZSCORE', KEYS[i], ARGV[2 * i - 1]) then
    redis.call('ZADD', KEYS[i], tonumber(ARGV[2 * i]), 'd:' .. ARGV[2 * i - 1])
    marked = marked + 1
  end
end
return marked
