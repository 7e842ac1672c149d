--[[
  recordSuccess: a delivery to a scope in backoff succeeded; each success outside a suspension steps
  the level down by one, halving the next suspension, until the scope is back to normal (level 0).

  KEYS[1] backoff HASH as in recordThrottleSignal-1.lua
  ARGV[1] now     ms
  ARGV[2] keepMs  how long the stepped-down state is remembered (window + longest suspension, as
                  recordThrottleSignal-1.lua keeps it)

  Returns the level after the step.
]]
local v = redis.call('HMGET', KEYS[1], 'level', 'until')
local level, untilAt = tonumber(v[1]) or 0, tonumber(v[2]) or 0
if level == 0 or untilAt > tonumber(ARGV[1]) then return level end
redis.call('HSET', KEYS[1], 'level', level - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return level - 1
