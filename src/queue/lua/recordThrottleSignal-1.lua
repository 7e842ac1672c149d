--[[
  recordThrottleSignal: counts one "slow down" answer (421, 4.7.x) from a throttle scope. `threshold`
  of them within `windowMs` suspend the scope; each new trigger before the scope has recovered
  doubles the suspension (suspendMs, 2x, 4x, ... up to maxSuspendMs), as PowerMTA's backoff mode.

  KEYS[1] backoff HASH  n = signals in the current window, ws = window start (ms),
                        level = triggers not yet recovered (0 = normal), until = suspended until (ms)
  ARGV[1] now        ms
  ARGV[2] threshold  signals that trigger a suspension
  ARGV[3] windowMs
  ARGV[4] suspendMs  first suspension
  ARGV[5] maxSuspendMs

  Returns the suspension end (ms) while the scope is suspended, -1 otherwise.
]]
local now = tonumber(ARGV[1])
local threshold, windowMs = tonumber(ARGV[2]), tonumber(ARGV[3])
local suspendMs, maxSuspendMs = tonumber(ARGV[4]), tonumber(ARGV[5])

local v = redis.call('HMGET', KEYS[1], 'n', 'ws', 'level', 'until')
local n, ws, level, untilAt = tonumber(v[1]) or 0, tonumber(v[2]), tonumber(v[3]) or 0, tonumber(v[4]) or 0

-- Answers that arrive while suspended come from transactions started before the suspension: they
-- are the same burst, not a new one, so they neither count nor escalate.
if untilAt > now then return untilAt end

if not ws or now - ws >= windowMs then
  ws, n = now, 0
end
n = n + 1
if n >= threshold then
  local duration = suspendMs * 2 ^ level
  -- stop climbing once the cap is reached, so recovery takes a bounded number of successes
  if duration < maxSuspendMs then level = level + 1 else duration = maxSuspendMs end
  untilAt = now + math.min(duration, maxSuspendMs)
  ws, n = now, 0
end
redis.call('HSET', KEYS[1], 'n', n, 'ws', string.format('%d', ws), 'level', level, 'until', string.format('%d', untilAt))
-- Forget a scope that stayed quiet for a full window after its longest possible suspension.
redis.call('PEXPIRE', KEYS[1], math.max(untilAt - now, 0) + windowMs + maxSuspendMs)
if untilAt > now then return untilAt end
return -1
