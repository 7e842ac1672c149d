--[[
  finishMessage(meta, body, links, stats, ttlMs, now): one recipient of a message reached a final
  state. Counts it off the record's `pending`; when it was the last one, the body (the bulk of the
  memory) goes at once — nothing will render it again — and the record, its link table and its
  engagement counters are kept for ttlMs, then expire by themselves. The record says when that began
  (`finishedAt`, ms): the retention walk ends it sooner when retention.records is lowered later
  (housekeeping/retention.ts). Returns the recipients still pending, or -1 when the message is not
  stored (erased, purged).

  Shared by finishCopy-5.lua and ack-3.lua: a script takes it with a line `--@include finishMessage`,
  which src/redis/scripts.ts replaces with this file.
]]
local function finishMessage(meta, body, links, stats, ttlMs, now)
  if redis.call('EXISTS', meta) == 0 then return -1 end
  local pending = redis.call('HINCRBY', meta, 'pending', -1)
  if pending <= 0 then
    redis.call('DEL', body)
    redis.call('HSET', meta, 'finishedAt', now)
    redis.call('PEXPIRE', meta, ttlMs)
    redis.call('PEXPIRE', links, ttlMs)
    redis.call('PEXPIRE', stats, ttlMs)
  end
  return pending
end
