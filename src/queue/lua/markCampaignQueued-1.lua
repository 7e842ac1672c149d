--[[
  markCampaignQueued: the enqueuer has queued the campaign's whole list. If every recipient has
  already reached a final state (or there were none to send to), the campaign completes now: no
  outcome is left to complete it later.

  KEYS[1] meta   HASH {m:<campaignId>}:meta
  ARGV[1] now    ms
  Returns the campaign's state after the call ('' when it is not stored).
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
redis.call('HSET', KEYS[1], 'enqueued', '1', 'queuedAt', ARGV[1])
local pending = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
if pending <= 0 and (state == 'sending' or state == 'paused') then
  redis.call('HSET', KEYS[1], 'state', 'completed', 'completedAt', ARGV[1])
  return 'completed'
end
return state
