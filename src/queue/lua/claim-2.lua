--[[
  claim: moves up to `max` entries due at or before `now` from a destination's ready set to its
  lease set, earliest first.

  KEYS[1] ready   ZSET member "<msgId>:<idx>:<attempt>" score = due time (ms)
  KEYS[2] leases  ZSET same members, score = lease expiry (ms)
  ARGV[1] now     ms
  ARGV[2] max     entries to claim at most (>= 0)
  ARGV[3] leaseMs lease length: a claimed entry returns to ready if not settled by now + leaseMs

  Returns { nextAt, member1, member2, ... }
    nextAt: the earliest score left in ready or leases after the claim, '' when both are empty.
            Lease expiries count because a lease that runs out puts its entry back to work, and an
            outcome (retry) re-adds to ready without touching the schedule: looking again no later
            than the earliest lease expiry is what keeps such entries from being forgotten.
]]
local now = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local expiry = now + tonumber(ARGV[3])

local out = { '' }
if max > 0 then
  local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, max)
  for i = 1, #due do
    redis.call('ZREM', KEYS[1], due[i])
    redis.call('ZADD', KEYS[2], expiry, due[i])
    out[i + 1] = due[i]
  end
end

local nextAt = false
local r = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if r[2] then nextAt = tonumber(r[2]) end
local l = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if l[2] and (not nextAt or tonumber(l[2]) < nextAt) then nextAt = tonumber(l[2]) end
if nextAt then out[1] = string.format('%d', nextAt) end
return out
