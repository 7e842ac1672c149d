--[[
  claim: moves up to `max` entries due at or before `now` from a destination's ready set to its
  lease set, earliest first.

  KEYS[1] ready   ZSET member "<msgId>:<idx>:<attempt>" score = due time (ms), or a campaign pointer
                  "@<campaignId>" standing for the campaign's recipients queued for this destination
  KEYS[2] leases  ZSET member "<msgId>:<idx>:<attempt>", score = lease expiry (ms)
  ARGV[1] now     ms
  ARGV[2] max     entries to claim at most (>= 0)
  ARGV[3] leaseMs lease length: a claimed entry returns to ready if not settled by now + leaseMs
  ARGV[4] token   this claim's lease token, unique to the claim (lib/lease.lua): the entries are leased
                  under it, and only an outcome that names it can requeue, bounce, hold, give back or
                  extend them

  A campaign pointer is expanded here: its recipients wait in the LIST "<dest>:cq:<campaignId>" (same
  hash tag as ready: the key is ready's name with 'ready' replaced) as bare contact numbers — a few
  bytes each rather than a sorted-set member per recipient — and become ordinary lease entries
  "<campaignId>:<no>:0" only when claimed. The pointer goes when its list is empty, and so does the
  campaign's entry in "<dest>:cqpos" once the enqueuer has sealed it (nothing more will be pushed).

  Order: the due entries of their own first, then the due campaigns' recipients, shared equally
  between the campaigns (see below).

  Returns { nextAt, member1, member2, ... }
    nextAt: the earliest score left in ready or leases after the claim, '' when both are empty.
            Lease expiries count because a lease that runs out puts its entry back to work, and an
            outcome (retry) re-adds to ready without touching the schedule: looking again no later
            than the earliest lease expiry is what keeps such entries from being forgotten.
]]
local now = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local expiry = now + tonumber(ARGV[3])
local base = string.sub(KEYS[1], 1, -6)
-- member, token, member, token, … for one HSET on the lease tokens (lib/lease.lua)
local owned = {}
local function lease(m)
  redis.call('ZADD', KEYS[2], expiry, m)
  owned[#owned + 1] = m
  owned[#owned + 1] = ARGV[4]
end

local out = { '' }
local n = 0
if max > 0 then
  local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, max)
  -- Entries of their own first (a message's recipients, retries), then the campaigns share what is
  -- left, each in turn taking an equal part: a campaign's pointer keeps the score of its first push,
  -- so claimed in score order it took every claim of the destination until its list was empty, and
  -- a password reset due now waited behind a whole newsletter (and every other campaign behind the
  -- first). An entry of its own is one recipient and there are at most `max` of them here: a claim
  -- cannot starve the campaigns, only serve them after.
  local pointers = {}
  for i = 1, #due do
    local m = due[i]
    if string.sub(m, 1, 1) == '@' then
      pointers[#pointers + 1] = m
    elseif n < max then
      redis.call('ZREM', KEYS[1], m)
      lease(m)
      n = n + 1
      out[n + 1] = m
    end
  end
  for k = 1, #pointers do
    if n >= max then break end
    local m = pointers[k]
    local cid = string.sub(m, 2)
    local q = base .. 'cq:' .. cid
    local nos = redis.call('LPOP', q, math.ceil((max - n) / (#pointers - k + 1)))
    if nos then
      for j = 1, #nos do
        local member = cid .. ':' .. nos[j] .. ':0'
        lease(member)
        n = n + 1
        out[n + 1] = member
      end
    end
    if redis.call('LLEN', q) == 0 then
      redis.call('ZREM', KEYS[1], m)
      local pos = base .. 'cqpos'
      if redis.call('HGET', pos, cid) == 'sealed' then redis.call('HDEL', pos, cid) end
    end
  end
end

-- In slices: unpack() is bounded by Lua's C stack (~8,000 values).
for i = 1, #owned, 1000 do redis.call('HSET', base .. 'owners', unpack(owned, i, math.min(i + 999, #owned))) end

local nextAt = false
local r = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if r[2] then nextAt = tonumber(r[2]) end
local l = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if l[2] and (not nextAt or tonumber(l[2]) < nextAt) then nextAt = tonumber(l[2]) end
if nextAt then out[1] = string.format('%d', nextAt) end
return out
