--[[
  campaignTransition: moves a campaign to a new lifecycle state if it is in one of the allowed states.

  KEYS[1] meta   HASH {m:<campaignId>}:meta
  ARGV[1] to     the new state
  ARGV[2] field  a time field to set to ARGV[3] ('' for none), e.g. 'pausedAt'
  ARGV[3] now    ms
  ARGV[4..] the states the transition is allowed from

  Returns the state the campaign was in ('' when it is not stored). The state changed only when that
  state is one of ARGV[4..].
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
for i = 4, #ARGV do
  if ARGV[i] == state then
    redis.call('HSET', KEYS[1], 'state', ARGV[1])
    if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
    return state
  end
end
return state
