--[[
  renewConnection: extends a connection slot we hold; a slot that expired (and may have been given
  to someone else) is not taken back.

  KEYS[1] conns   ZSET as in acquireConnection-1.lua
  ARGV[1] connId
  ARGV[2] now     ms
  ARGV[3] ttlMs

  Returns 1 when renewed, 0 when the slot was no longer ours.
]]
local now = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
-- relative to the caller's clock (tests pin it), not the server's
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
return 1
