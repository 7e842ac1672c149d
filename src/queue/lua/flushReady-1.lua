--[[
  flushReady: makes a destination's waiting recipients due now (`sluice queue flush`), as Postfix's
  `postqueue -f` does: deferred mail is retried at once instead of at its next attempt time.

  KEYS[1] ready  ZSET {d:<dest>}:ready
  ARGV[1] now    ms
  ARGV[2] limit  entries looked at in this call (bounds the script's work)
  ARGV[3] from   where this call starts: '(' .. now at first, then the `at` an earlier call returned
  ARGV[4] skip   pointers scored exactly `from` that earlier calls looked at

  A campaign's pointer ("@<campaignId>", queue/campaign.ts) is left where it is: it waits for its
  campaign's own throttle, which a flush does not lift. Entries moved leave the range (their score
  is now `now`) and pointers stay in it, so the walk goes on from the score it reached, past the
  pointers at that very score. Not an offset from the start: a pointer that leaves the range or moves
  later between two calls (its campaign paused, or claimed and throttled again) would make it step
  over entries. Only a pointer at the very score reached doing so still can.

  Returns {looked, moved, at, skip}: looked < limit when the range is done; else the next call's
  from and skip.
]]
local now = tonumber(ARGV[1])
local skip = tonumber(ARGV[4])
local r = redis.call('ZRANGE', KEYS[1], ARGV[3], '+inf', 'BYSCORE', 'LIMIT', skip, tonumber(ARGV[2]), 'WITHSCORES')
local moved = 0
local at = ARGV[3]
local ties = skip
for i = 1, #r, 2 do
  local m, score = r[i], r[i + 1]
  if score ~= at then
    at = score
    ties = 0
  end
  if string.byte(m, 1) == 64 then -- '@'
    ties = ties + 1
  else
    redis.call('ZADD', KEYS[1], 'XX', now, m)
    moved = moved + 1
  end
end
return {#r / 2, moved, at, ties}
