--[[
  finishCampaign: counts one delivery outcome of a campaign recipient and, when the outcome is final
  and it was the last recipient pending, completes the campaign.

  KEYS[1] meta   HASH {m:<campaignId>}:meta (state, pending, enqueued, …)
  KEYS[2] stats  HASH {m:<campaignId>}:stats (delivery and engagement counters)
  ARGV[1] counter  stats field to increment ('delivered', 'deferred', 'bounced', …), '' for none
  ARGV[2] reason   bounce reason: 'bounced:<reason>' is incremented too; '' for none
  ARGV[3] final    '1' when the recipient reached a final state
  ARGV[4] now      ms
  ARGV[5] hard     '1': also count a hard bounce of the address ('hardbounces', judged by the reputation guard)
  ARGV[6] undo     '1': the copy was counted delivered (a hard bounce reported by mail after the 250):
                   'delivered' goes down by one, so delivered + bounced stays the copies that reached a
                   server, and the guard's rate (hardbounces / (delivered + hardbounces)) is not diluted

  A campaign completes when its list has been queued whole (enqueued = 1) and no recipient is pending;
  a paused one completes too (nothing is left to resume), a cancelled one stays cancelled.
  Returns the campaign's state after the call, or '' when the campaign is not stored.
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if ARGV[1] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[2], 'bounced:' .. ARGV[2], 1) end
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[2], 'hardbounces', 1) end
if ARGV[6] == '1' then redis.call('HINCRBY', KEYS[2], 'delivered', -1) end
if ARGV[3] == '1' then
  local pending = redis.call('HINCRBY', KEYS[1], 'pending', -1)
  if pending <= 0 and redis.call('HGET', KEYS[1], 'enqueued') == '1' and (state == 'sending' or state == 'paused') then
    redis.call('HSET', KEYS[1], 'state', 'completed', 'completedAt', ARGV[4])
    state = 'completed'
  end
end
return state
