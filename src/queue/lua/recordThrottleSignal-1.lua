--[[
  recordThrottleSignal: counts one "slow down" answer (421, 4.7.x) from a throttle scope. `threshold`
  of them within `windowMs` are a trigger: the scope is suspended for a short while (suspendMs,
  doubling with the level up to maxSuspendMs, as PowerMTA's backoff mode) and its slowdown level
  rises by one, up to maxLevel. Each level halves the scope's connections and rate once the
  suspension is over (src/queue/backoff.ts applies it); recordSuccess-1.lua removes levels one at a
  time after quiet periods.

  KEYS[1] backoff HASH  n = signals in the current window, ws = window start (ms),
                        level = slowdown level (0 = normal), until = suspended until (ms),
                        quiet = start of the current quiet period (ms): the last signal or step down,
                        reason = the last slow-down answer (already truncated by the caller),
                        at = time of the last trigger (ms)
  ARGV[1] now        ms
  ARGV[2] threshold  signals that trigger
  ARGV[3] windowMs
  ARGV[4] suspendMs  first suspension
  ARGV[5] maxSuspendMs
  ARGV[6] maxLevel   highest slowdown level (>= 1)
  ARGV[7] keepMs     how long a scope that stays silent is remembered
  ARGV[8] reason     the answer's text

  Returns { suspension end (ms) while the scope is suspended, else -1; the level }.
]]
local now = tonumber(ARGV[1])
local threshold, windowMs = tonumber(ARGV[2]), tonumber(ARGV[3])
local suspendMs, maxSuspendMs = tonumber(ARGV[4]), tonumber(ARGV[5])
local maxLevel, keepMs = tonumber(ARGV[6]), tonumber(ARGV[7])

local v = redis.call('HMGET', KEYS[1], 'n', 'ws', 'level', 'until')
local n, ws, level, untilAt = tonumber(v[1]) or 0, tonumber(v[2]), tonumber(v[3]) or 0, tonumber(v[4]) or 0

-- Answers that arrive while suspended come from transactions started before the suspension: they
-- are the same burst, not a new one, so they neither count nor escalate.
if untilAt > now then return { untilAt, level } end

if not ws or now - ws >= windowMs then
  ws, n = now, 0
end
n = n + 1
if n >= threshold then
  -- suspendMs at level 0, doubled per level already reached; the cap bounds it
  untilAt = now + math.min(suspendMs * 2 ^ level, maxSuspendMs)
  if level < maxLevel then level = level + 1 end
  ws, n = now, 0
  redis.call('HSET', KEYS[1], 'at', string.format('%d', now))
end
-- Any slow-down answer, trigger or not, restarts the quiet period that recovery waits for; a
-- suspension is not quiet either, so the period starts when it ends.
redis.call('HSET', KEYS[1], 'n', n, 'ws', string.format('%d', ws), 'level', level, 'until', string.format('%d', untilAt),
  'quiet', string.format('%d', math.max(now, untilAt)), 'reason', ARGV[8])
redis.call('PEXPIRE', KEYS[1], math.max(untilAt - now, 0) + keepMs)
if untilAt > now then return { untilAt, level } end
return { -1, level }
