--[[
  acquireConnection: takes one of `max` connection slots of a throttle scope, shared by every
  Sluice process. A slot is a lease: a process that dies without releasing it loses it at expiry.

  KEYS[1] conns   ZSET member = connection id, score = slot expiry (ms)
  ARGV[1] connId
  ARGV[2] max     slots in the scope
  ARGV[3] now     ms
  ARGV[4] ttlMs   slot lease length
  ARGV[5] domain  (optional) the destination asking, in a scope several share (a provider rule's):
                  slots go to its destinations in turn, not to whichever asks most often
  ARGV[6] waitTtl (with domain) ms: a destination that has not asked again for this long no longer waits
  ARGV[7] join    (with domain) '1': refused, the destination waits its turn; '' it does not (it has a
                  connection already, and asks for one more)

  Turns: a destination refused a slot waits in "<scope>:waiting" (ZSET domain → when it began to
  wait) and "<scope>:waitseen" (ZSET domain → when it last asked); a slot that comes free goes to
  the destinations waiting longest, so one destination with a backlog (it asks again after every
  claim, every connection it ends) cannot hold a provider's slots until it has sent everything while
  the provider's other domains wait. A destination gets a slot only when there are more free ones
  than destinations that have waited longer. The dispatcher gives its slot up after a batch when
  others wait (queue/throttle.ts othersWaiting).

  Returns 1 when the slot is held (taken now, or already ours and renewed), 0 when refused.
]]
--@include slotLine
local now = tonumber(ARGV[3])
local expiry = now + tonumber(ARGV[4])
local who = ARGV[5] or ''
local waiting, seen = slotLine(KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held then
  local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
  local ahead = 0
  if who ~= '' then
    local gone = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. (now - tonumber(ARGV[6])), 'LIMIT', 0, 100)
    if #gone > 0 then
      redis.call('ZREM', seen, unpack(gone))
      redis.call('ZREM', waiting, unpack(gone))
    end
    local mine = redis.call('ZSCORE', waiting, who)
    if mine then ahead = redis.call('ZCOUNT', waiting, '-inf', '(' .. mine) else ahead = redis.call('ZCARD', waiting) end
  end
  if free <= ahead then
    if who ~= '' and ARGV[7] == '1' then
      redis.call('ZADD', waiting, 'NX', now, who)
      redis.call('ZADD', seen, now, who)
      local ttl = math.max(1, tonumber(ARGV[6]) * 2)
      redis.call('PEXPIRE', waiting, ttl)
      redis.call('PEXPIRE', seen, ttl)
    end
    return 0
  end
  if who ~= '' then
    redis.call('ZREM', waiting, who)
    redis.call('ZREM', seen, who)
  end
end
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
-- the key lives as long as its longest slot
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
-- relative to the caller's clock (tests pin it), not the server's
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
return 1
