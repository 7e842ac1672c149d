--[[
  recordSuccess: a delivery to a scope in backoff succeeded. Recovery is gradual: one slowdown level
  is removed when the scope has been quiet (no slow-down answer, no suspension, no step down) for
  recoverMs, and the quiet period restarts, so each level lasts at least recoverMs of good answers.

  KEYS[1] backoff HASH as in recordThrottleSignal-1.lua
  ARGV[1] now        ms
  ARGV[2] recoverMs  quiet time that removes one level
  ARGV[3] keepMs     how long the stepped-down state is remembered

  Returns the level after the call.
]]
local now, recoverMs = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'level', 'until', 'quiet')
local level, untilAt, quiet = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
if level == 0 or untilAt > now or now - quiet < recoverMs then return level end
level = level - 1
redis.call('HSET', KEYS[1], 'level', level, 'quiet', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return level
