--[[
  flushReady: makes a destination's waiting recipients due now (`sluice queue flush`), as Postfix's
  `postqueue -f` does: deferred mail is retried at once instead of at its next attempt time.

  KEYS[1] ready  ZSET {d:<dest>}:ready
  ARGV[1] now    ms
  ARGV[2] limit  entries looked at in this call (bounds the script's work)
  ARGV[3] skip   entries still in the range that earlier calls of this flush left (see below)

  A campaign's pointer ("@<campaignId>", queue/campaign.ts) is left where it is: it waits for its
  campaign's own throttle, which a flush does not lift. Entries moved leave the range (their score
  is now `now`) and pointers stay in it, in order, so the caller passes the pointers it was told of
  so far as `skip`.

  Returns {looked, moved}: looked < limit when the range is done.
]]
local now = tonumber(ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], '(' .. ARGV[1], '+inf', 'BYSCORE', 'LIMIT', tonumber(ARGV[3]), tonumber(ARGV[2]))
local moved = 0
for _, m in ipairs(members) do
  if string.byte(m, 1) ~= 64 then -- '@'
    redis.call('ZADD', KEYS[1], 'XX', now, m)
    moved = moved + 1
  end
end
return {#members, moved}
