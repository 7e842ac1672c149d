--[[
  finishCopy: counts one copy's final outcome on its message or campaign (Redis Cluster: the
  outcome's script wrote it in the destination's slot, and noted the count it owes, lib/owed.lua).
  Once per copy, however often it is called: the live path (delivery/dispatcher.ts) and the reaper's
  repair of what a crash left owed (housekeeping/reaper.ts) may both come, in either order.

  KEYS[1] meta     HASH {m:<id>}:meta
  KEYS[2] body     STRING {m:<id>}:body
  KEYS[3] links    LIST {m:<id>}:links
  KEYS[4] stats    HASH {m:<id>}:stats
  KEYS[5] counted  bitmap {m:<id>}:counted, bit <idx> = this copy's outcome is counted
  ARGV[1] idx      the copy (recipient index, or a campaign's contact number)
  ARGV[2] counter  a campaign's counter: delivered, bounced, expired, suppressed, cancelled
  ARGV[3] reason   bounce reason ('' for none)
  ARGV[4] hard     '1': a hard bounce of the address
  ARGV[5] now      ms
  ARGV[6] ttlMs    how long a finished message's record is kept (retention.records); the bitmap too

  A campaign (meta kind 'campaign') counts the outcome and takes the copy off its pending, completing
  it with its last (lib/finishCampaign.lua); a message takes the recipient off its pending, and the
  body goes with the last (lib/finishMessage.lua).

  Returns {-1} the message or campaign is not stored (purged, erased); {-2} counted before;
  {1, state} a campaign counted now (its state after); {0, pending} a message counted now.
]]
--@include finishMessage
--@include finishCampaign
local kind = redis.call('HGET', KEYS[1], 'kind')
if not kind then return {-1} end
if redis.call('SETBIT', KEYS[5], tonumber(ARGV[1]), 1) == 1 then return {-2} end
redis.call('PEXPIRE', KEYS[5], ARGV[6])
if kind == 'campaign' then
  return {1, finishCampaign(KEYS[1], KEYS[4], ARGV[2], ARGV[3], '1', ARGV[5], ARGV[4], '0')}
end
return {0, finishMessage(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[6], ARGV[5])}
