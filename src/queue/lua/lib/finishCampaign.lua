--[[
  finishCampaign(meta, stats, counter, reason, final, now, hard, undo): counts one delivery outcome of
  a campaign recipient and, when the outcome is final and it was the last recipient pending,
  completes the campaign. Arguments as finishCampaign-2.lua's ARGV (strings).

  Shared by finishCampaign-2.lua, and by ack-3.lua and bounce-3.lua, which count a campaign copy's
  final outcome in the same step as the outcome on a single server: a process killed between two
  calls lost the copy's count, and the campaign waited 'sending' for good on a pending count that
  nothing would lower.

  A campaign completes when its list has been queued whole (enqueued = 1) and no recipient is pending;
  a paused one completes too (nothing is left to resume), a cancelled one stays cancelled. `meta` is
  {m:<id>}:meta: the campaign's destination set, {m:<id>}:domains, is named from it (same slot).
  Returns the campaign's state after the call, or '' when the campaign is not stored.
]]
local function finishCampaign(meta, stats, counter, reason, final, now, hard, undo)
  local state = redis.call('HGET', meta, 'state')
  if not state then return '' end
  if counter ~= '' then redis.call('HINCRBY', stats, counter, 1) end
  if reason ~= '' then redis.call('HINCRBY', stats, 'bounced:' .. reason, 1) end
  if hard == '1' then redis.call('HINCRBY', stats, 'hardbounces', 1) end
  if undo == '1' then redis.call('HINCRBY', stats, 'delivered', -1) end
  if final == '1' then
    local pending = redis.call('HINCRBY', meta, 'pending', -1)
    if pending <= 0 and redis.call('HGET', meta, 'enqueued') == '1' and (state == 'sending' or state == 'paused') then
      redis.call('HSET', meta, 'state', 'completed', 'completedAt', now)
      -- Its destination set ({m:<id>}:domains, queue/campaign.ts) served pause, resume and cancel,
      -- none of which a completed campaign takes: kept, it held a member per destination for good.
      redis.call('DEL', string.sub(meta, 1, -5) .. 'domains')
      state = 'completed'
    end
  end
  return state
end
