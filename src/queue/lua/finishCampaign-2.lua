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

  The count itself is lib/finishCampaign.lua (ack-3.lua and bounce-3.lua count a copy's final
  outcome with it in the same step on a single server). Returns the campaign's state after the call,
  or '' when the campaign is not stored.
]]
--@include finishCampaign
return finishCampaign(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6] or '0')
