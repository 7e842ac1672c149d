--[[
  campaignHold: gives back claimed entries of a campaign that must not be sent now (paused, or over
  its own throttle), without counting an attempt.

  KEYS[1] leases  ZSET  the destination's lease set
  KEYS[2] ready   ZSET  the destination's ready set
  KEYS[3] queue   LIST  "<dest>:cq:<campaignId>"
  ARGV[1] campaignId
  ARGV[2] pointerAt  ms: first attempts go back to the head of the queue and the pointer is set to this
                     score; '' (paused): the pointer is removed and resume() puts it back
  ARGV[3] holdUntil  ms: retries (attempt > 0) go back to ready at this score
  ARGV[4..] member, token, …  members "<campaignId>:<no>:<attempt>" as claimed, each with its claim's
                     lease token (lib/lease.lua)

  First attempts given back to a list that a claim emptied and whose chunk record it then dropped (the
  campaign's list was queued whole: claim-2.lua) get the record back, as 'sealed': "<dest>:cqpos" (its
  name is ready's with 'ready' replaced, same hash tag) is how `sluice queue`, the queue gauges and
  the reaper (which keeps a destination with campaign recipients listed) find a campaign's list.

  Returns the number of entries given back (members no longer leased under their token are skipped).
]]
--@include lease
local moved = 0
local first = {}
for i = 4, #ARGV - 1, 2 do
  if takeLease(KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    moved = moved + 1
    local no, attempt = string.match(ARGV[i], ':(%d+):(%d+)$')
    if attempt == '0' then
      first[#first + 1] = no
    else
      redis.call('ZADD', KEYS[2], ARGV[3], ARGV[i])
    end
  end
end
-- LPUSH reverses its arguments: push the last first so the queue keeps its order.
for i = #first, 1, -1 do redis.call('LPUSH', KEYS[3], first[i]) end
if #first > 0 then redis.call('HSETNX', string.sub(KEYS[2], 1, -6) .. 'cqpos', ARGV[1], 'sealed') end
local pointer = '@' .. ARGV[1]
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[2], pointer)
elseif redis.call('LLEN', KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[2], pointer)
end
return moved
