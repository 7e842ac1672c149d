--[[
  acquireConnection: takes one of `max` connection slots of a throttle scope, shared by every
  Sluice process. A slot is a lease: a process that dies without releasing it loses it at expiry.

  KEYS[1] conns   ZSET member = connection id, score = slot expiry (ms)
  ARGV[1] connId
  ARGV[2] max     slots in the scope
  ARGV[3] now     ms
  ARGV[4] ttlMs   slot lease length

  Returns 1 when the slot is held (taken now, or already ours and renewed), 0 when all are taken.
]]
local now = tonumber(ARGV[3])
local expiry = now + tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
-- the key lives as long as its longest slot
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
-- relative to the caller's clock (tests pin it), not the server's
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
return 1
