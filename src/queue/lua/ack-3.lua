--[[
  ack: records a delivery and removes the entry from the queue.

  KEYS[1] leases  ZSET of the destination
  KEYS[2] ready   ZSET of the destination (the entry may be there if a reaper returned it)
  KEYS[3] rs      HASH delivery record of the recipient
  ARGV[1] member  "<msgId>:<idx>:<attempt>"
  ARGV[2] now     ms
  ARGV[3] attempts  attempts made, this one included
  ARGV[4] code    SMTP reply code, '' when none
  ARGV[5] enhanced  enhanced status code, '' when none
  ARGV[6] response  remote reply (already truncated by the caller)
  ARGV[7] ttlMs   how long the final record is kept

  A delivery takes the lease whoever holds it (lib/lease.lua, token ''): if the entry was reaped and
  claimed again meanwhile, the mail has arrived all the same, and the other holder finds its lease
  gone (extendLeases-1.lua) and does not send it again if it has not yet.

  Returns 2 = applied, the lease was still held; 1 = applied, the lease had been reaped (the entry
  was back in ready); 0 = nothing done, the entry was already acked, retried or bounced.

  On a single server the caller may add the recipient's message (called with 7 keys, one round trip
  instead of two per delivered recipient; on a cluster they are in another slot):
  KEYS[4..7] meta, body, links, stats of {m:<id>}, as finishCopy-5.lua takes them
  ARGV[8]    ttlMs of a finished message's record
  When the ack applied, the recipient is finished too, as finishCopy-5.lua does it (both
  include lib/finishMessage.lua; test/queue/ack-finish.test.ts checks they leave the same keys). The reply is then
  {2|1|0, pending}: pending as finishCopy returns it (-1: the message is not stored), or -2 when
  nothing was applied and nothing finished.

  A campaign's copy on a single server: KEYS[4..5] the campaign's meta and stats ({m:<campaignId>},
  5 keys): when the ack applies, the copy is counted delivered and off the campaign's pending in the
  same step (lib/finishCampaign.lua); the reply is the number above.

  On a single server the caller may also add the event stream as the last key (4, 6 or 8 keys), with
  maxLen and the packed `delivered` event as the last two arguments: the event is appended when the
  ack applies, in the same step (lib/appendEvent.lua).

  Without the message's or the campaign's keys (3 keys, or 4 with the stream), ARGV[8] is the count
  the copy is owed on its message or campaign ('' for none; with the stream, before maxLen and the
  event), noted in the destination's owed set when the ack applies (lib/owed.lua): the count is
  another call, and a process killed before it, or a reply lost and the script sent again (which
  then finds the lease gone and answers 0), would leave it unmade.
]]
--@include finishMessage
--@include finishCampaign
--@include appendEvent
--@include lease
--@include owed
local held = takeLease(KEYS[1], ARGV[1], '')
local reaped = redis.call('ZREM', KEYS[2], ARGV[1])
local withMessage = #KEYS >= 7
local withCampaign = #KEYS == 5 or #KEYS == 6
local withEvent = #KEYS == 4 or #KEYS == 6 or #KEYS == 8
if held == 0 and reaped == 0 then
  if withMessage then return {0, -2} end
  return 0
end

-- One HSET and one HDEL: every redis.call is a command of its own, in the AOF too.
local set, del = {'state', 'delivered', 'attempts', ARGV[3], 'response', ARGV[6], 'updatedAt', ARGV[2]}, {'nextAt', 'reason'}
if ARGV[4] ~= '' then set[#set + 1] = 'code'; set[#set + 1] = ARGV[4] else del[#del + 1] = 'code' end
if ARGV[5] ~= '' then set[#set + 1] = 'enhanced'; set[#set + 1] = ARGV[5] else del[#del + 1] = 'enhanced' end
redis.call('HSET', KEYS[3], unpack(set))
redis.call('HDEL', KEYS[3], unpack(del))
redis.call('PEXPIRE', KEYS[3], ARGV[7])
local reply = 1
if held == 1 then reply = 2 end
if withEvent then appendEvent(KEYS[#KEYS], ARGV[#ARGV - 1], ARGV[#ARGV]) end
if withCampaign then finishCampaign(KEYS[4], KEYS[5], 'delivered', '', '1', ARGV[2], '0', '0') end
if #KEYS <= 4 then owe(KEYS[1], ARGV[2], ARGV[8]) end
if not withMessage then return reply end

return {reply, finishMessage(KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[8], ARGV[2])}
