--[[
  finishCampaign: counts one delivery outcome of a campaign recipient and, when the outcome is final
  and it was the last recipient pending, completes the campaign.

  KEYS[1] meta    HASH {m:<campaignId>}:meta (state, pending, enqueued, …)
  KEYS[2] stats   HASH {m:<campaignId>}:stats (delivery and engagement counters)
  KEYS[3] counted STRING {m:<campaignId>}:counted, a bitmap: bit <copy> set once the copy's final
                  outcome is counted (ARGV[7])
  ARGV[1] counter  stats field to increment ('delivered', 'deferred', 'bounced', …), '' for none
  ARGV[2] reason   bounce reason: 'bounced:<reason>' is incremented too; '' for none
  ARGV[3] final    '1' when the recipient reached a final state
  ARGV[4] now      ms
  ARGV[5] hard     '1': also count a hard bounce of the address ('hardbounces', judged by the reputation guard)
  ARGV[6] undo     '1': the copy was counted delivered (a hard bounce reported by mail after the 250):
                   'delivered' goes down by one, so delivered + bounced stays the copies that reached a
                   server, and the guard's rate (hardbounces / (delivered + hardbounces)) is not diluted
  ARGV[7] copy     the copy's number (contact number), with a final outcome: counted once only. On a
                   Redis Cluster the copy's outcome (its slot) and this count (the campaign's) are two
                   calls; delivery counts first, then writes the outcome, so a process killed between
                   the two leaves the copy leased, redelivered later, and its second count is a no-op
                   here instead of a copy never counted (pending never 0, the campaign 'sending' for
                   ever). '' for none.
  ARGV[8] ttl      ms the bitmap is kept after its last bit (the copies' record life)

  The count itself is lib/finishCampaign.lua (ack-3.lua and bounce-3.lua count a copy's final
  outcome with it in the same step on a single server). Returns the campaign's state after the call,
  or '' when the campaign is not stored.
]]
--@include finishCampaign
if ARGV[3] == '1' and ARGV[7] ~= nil and ARGV[7] ~= '' then
  local was = redis.call('SETBIT', KEYS[3], tonumber(ARGV[7]), 1)
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
  if was == 1 then return redis.call('HGET', KEYS[1], 'state') or '' end
end
return finishCampaign(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6] or '0')
