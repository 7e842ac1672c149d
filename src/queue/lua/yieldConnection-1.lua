--[[
  yieldConnection: after a batch, a connection of a scope several destinations share (a provider
  rule's) gives its slot up when more destinations wait for one than there are slots free: one
  connection per waiting destination, decided here in one step, so that the busy destination's other
  connections carry on (they would all leave at once, and the rule's slots stand empty until the
  waiters ask again).

  KEYS[1] conns   ZSET as in acquireConnection-1.lua (its line: "<scope>:waiting", "<scope>:waitseen")
  ARGV[1] connId  the connection asking
  ARGV[2] domain  its destination
  ARGV[3] max     slots in the scope
  ARGV[4] now     ms
  ARGV[5] waitTtl ms: waits not renewed for this long do not count

  Returns {0} (carry on), or {1, head} when the slot was given up: head is the destination at the
  head of the line ('' when none), which the caller makes due at once, so the slot does not stand
  empty until its next ask.
]]
--@include slotLine
local now = tonumber(ARGV[4])
local waiting, seen = slotLine(KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local fresh = redis.call('ZRANGEBYSCORE', seen, now - tonumber(ARGV[5]), '+inf')
local others = {}
for _, d in ipairs(fresh) do
  if d ~= ARGV[2] then others[d] = true end
end
local n = 0
for _ in pairs(others) do n = n + 1 end
if n == 0 or n <= tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1]) then return {0} end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return {0} end
-- The head of the line: the waiter that waited longest and still asks.
for _, d in ipairs(redis.call('ZRANGE', waiting, 0, n)) do
  if others[d] then return {1, d} end
end
return {1, ''}
