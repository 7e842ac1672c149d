--[[
  pushCampaign: queues one chunk of a campaign's recipients for one destination.

  KEYS[1] queue   LIST  "<dest>:cq:<campaignId>": contact numbers waiting (see claim-2.lua)
  KEYS[2] pushed  HASH  "<dest>:cqpos": campaignId → "<chunk>:<count>", the last chunk pushed here
  KEYS[3] ready   ZSET  the destination's ready set (gets the pointer "@<campaignId>")
  ARGV[1] campaignId
  ARGV[2] chunk   chunk number (increasing; the enqueuer's cursor position)
  ARGV[3] dueAt   ms, the pointer's score when it is added (an earlier score is kept)
  ARGV[4] addPointer  '1' to add the pointer (the campaign is sending), '0' to queue without it (paused)
  ARGV[5..] contact numbers

  The enqueuer records its cursor only after every destination of a chunk is pushed, so after a crash
  it pushes the chunk again: a chunk already pushed here is skipped, which keeps recipients from being
  queued twice. Returns the number of recipients this chunk queued here (the earlier count when skipped).
]]
local last = redis.call('HGET', KEYS[2], ARGV[1])
-- Sealed: the campaign's whole list was queued already; nothing more belongs here.
if last == 'sealed' then return 0 end
if last then
  local sep = string.find(last, ':', 1, true)
  local chunk = tonumber(string.sub(last, 1, sep - 1))
  if chunk >= tonumber(ARGV[2]) then
    if chunk == tonumber(ARGV[2]) then return tonumber(string.sub(last, sep + 1)) end
    return 0
  end
end
local count = #ARGV - 4
for i = 5, #ARGV, 5000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 4999, #ARGV)))
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. count)
if ARGV[4] == '1' and count > 0 then redis.call('ZADD', KEYS[3], 'LT', ARGV[3], '@' .. ARGV[1]) end
return count
