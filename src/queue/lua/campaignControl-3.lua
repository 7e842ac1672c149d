--[[
  campaignControl: pauses, resumes or cancels a campaign at one destination.

  KEYS[1] ready   ZSET  the destination's ready set
  KEYS[2] queue   LIST  "<dest>:cq:<campaignId>"
  KEYS[3] pushed  HASH  "<dest>:cqpos"
  ARGV[1] op      'pause' | 'resume' | 'cancel' | 'seal'
  ARGV[2] campaignId
  ARGV[3] now     ms (resume: the pointer's score)

  pause   removes the pointer: nothing more of the campaign is claimed here (claims in flight finish)
  resume  puts the pointer back when recipients wait
  cancel  drops the waiting recipients, the pointer and the chunk record
  seal    the whole list is queued: the chunk record goes now if nothing waits, else when the claim
          that empties the queue finds it sealed (claim-2.lua); no chunk is accepted after it
  Returns the number of recipients waiting here (cancel: the number dropped).
]]
local pointer = '@' .. ARGV[2]
local waiting = redis.call('LLEN', KEYS[2])
if ARGV[1] == 'pause' then
  redis.call('ZREM', KEYS[1], pointer)
elseif ARGV[1] == 'resume' then
  if waiting > 0 then redis.call('ZADD', KEYS[1], ARGV[3], pointer) end
elseif ARGV[1] == 'seal' then
  if waiting == 0 then redis.call('HDEL', KEYS[3], ARGV[2]) else redis.call('HSET', KEYS[3], ARGV[2], 'sealed') end
elseif ARGV[1] == 'cancel' then
  redis.call('ZREM', KEYS[1], pointer)
  redis.call('UNLINK', KEYS[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return waiting
