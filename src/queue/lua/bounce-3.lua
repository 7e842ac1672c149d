--[[
  bounce: records a permanent failure ('bounced') or a give-up after the maximum age ('expired')
  and removes the entry from the queue.

  KEYS[1] leases  ZSET of the destination
  KEYS[2] ready   ZSET of the destination
  KEYS[3] rs      HASH delivery record of the recipient
  ARGV[1] member  "<msgId>:<idx>:<attempt>"
  ARGV[2] now     ms
  ARGV[3] state   'bounced' | 'expired' | 'suppressed' (dropped at claim time: on a suppression list)
  ARGV[4] attempts  attempts made, this one included
  ARGV[5] code    '' when none
  ARGV[6] enhanced  '' when none
  ARGV[7] response
  ARGV[8] reason  bounce reason (taxonomy name)
  ARGV[9] ttlMs   how long the final record is kept
  ARGV[10] waiting '1': only an entry waiting in ready applies (a cancel: one being sent now, leased,
                  is left to its holder, whose outcome then says what happened); '' for an outcome
  ARGV[11] token  the claim's lease token (lib/lease.lua), as retry-3.lua takes it
  KEYS[4..5], ARGV[12..14]  (optional, single server; 5 keys, or 6 with the stream) a campaign copy's
          campaign meta and stats, and its count: counter ('bounced', 'expired', …), bounce reason
          ('' for none), hard ('1': a hard bounce of the address). When the outcome applies, the copy is
          counted and taken off the campaign's pending in the same step (lib/finishCampaign.lua)
  KEYS[#KEYS] (4 or 6 keys), ARGV[#ARGV - 1], ARGV[#ARGV]  (optional, single server) the event
          stream, its maxLen and the packed event, appended when the outcome applies, in the same step
          (lib/appendEvent.lua)

  Without the campaign's keys (3 keys, or 4 with the stream), ARGV[12] is the count the copy is owed
  on its message or campaign ('' for none), noted in the destination's owed set when the outcome
  applies (lib/owed.lua), as ack-3.lua does.

  Returns 2 / 1 / 0 as ack-3.lua.
]]
--@include appendEvent
--@include finishCampaign
--@include lease
--@include owed
local held = 0
if ARGV[10] ~= '1' then held = takeLease(KEYS[1], ARGV[1], ARGV[11]) end
if held == -1 then return 0 end
local reaped = redis.call('ZREM', KEYS[2], ARGV[1])
if held == 0 and reaped == 0 then return 0 end

-- One HSET and one HDEL (see ack-3.lua).
local set, del = {'state', ARGV[3], 'attempts', ARGV[4], 'response', ARGV[7], 'reason', ARGV[8], 'updatedAt', ARGV[2]}, {'nextAt'}
if ARGV[5] ~= '' then set[#set + 1] = 'code'; set[#set + 1] = ARGV[5] else del[#del + 1] = 'code' end
if ARGV[6] ~= '' then set[#set + 1] = 'enhanced'; set[#set + 1] = ARGV[6] else del[#del + 1] = 'enhanced' end
redis.call('HSET', KEYS[3], unpack(set))
redis.call('HDEL', KEYS[3], unpack(del))
redis.call('PEXPIRE', KEYS[3], ARGV[9])
if #KEYS == 4 or #KEYS == 6 then appendEvent(KEYS[#KEYS], ARGV[#ARGV - 1], ARGV[#ARGV]) end
if #KEYS >= 5 then finishCampaign(KEYS[4], KEYS[5], ARGV[12], ARGV[13], '1', ARGV[2], ARGV[14], '0') end
if #KEYS <= 4 then owe(KEYS[1], ARGV[2], ARGV[12]) end
if held == 1 then return 2 end
return 1
