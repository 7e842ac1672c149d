--[[
  retry: records a deferral and puts the entry back in ready, one attempt later, due at nextAt.

  KEYS[1] leases  ZSET of the destination
  KEYS[2] ready   ZSET of the destination
  KEYS[3] rs      HASH delivery record of the recipient
  ARGV[1] member  "<msgId>:<idx>:<attempt>" as claimed
  ARGV[2] next    "<msgId>:<idx>:<attempt+1>"
  ARGV[3] now     ms
  ARGV[4] nextAt  ms, due time of the next attempt
  ARGV[5] attempts  attempts made, this one included (attempt + 1)
  ARGV[6] code    SMTP reply code, '' when none
  ARGV[7] enhanced  '' when none
  ARGV[8] response
  ARGV[9] token   the claim's lease token (lib/lease.lua): leased under another, the entry was reaped
                  and claimed again, and this late outcome changes nothing (returns 0)
  KEYS[4], ARGV[#ARGV - 1], ARGV[#ARGV]  (optional, single server) the event stream, its maxLen and the
          packed event, appended when the outcome applies, in the same step (lib/appendEvent.lua)

  Returns 2 / 1 / 0 as ack-3.lua.
]]
--@include appendEvent
--@include lease
local held = takeLease(KEYS[1], ARGV[1], ARGV[9])
if held == -1 then return 0 end
local reaped = redis.call('ZREM', KEYS[2], ARGV[1])
if held == 0 and reaped == 0 then return 0 end

redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
-- One HSET and one HDEL (see ack-3.lua).
local set, del = {'state', 'deferred', 'attempts', ARGV[5], 'response', ARGV[8], 'nextAt', ARGV[4], 'updatedAt', ARGV[3]}, {'reason'}
-- The first attempt's time: a campaign copy's retries expire counted from it (delivery/dispatcher.ts retriedSince).
if ARGV[5] == '1' then set[#set + 1] = 'firstAt'; set[#set + 1] = ARGV[3] end
if ARGV[6] ~= '' then set[#set + 1] = 'code'; set[#set + 1] = ARGV[6] else del[#del + 1] = 'code' end
if ARGV[7] ~= '' then set[#set + 1] = 'enhanced'; set[#set + 1] = ARGV[7] else del[#del + 1] = 'enhanced' end
redis.call('HSET', KEYS[3], unpack(set))
redis.call('HDEL', KEYS[3], unpack(del))
-- a pending recipient's record lives as long as the entry does
redis.call('PERSIST', KEYS[3])
if #KEYS == 4 then appendEvent(KEYS[4], ARGV[#ARGV - 1], ARGV[#ARGV]) end
if held == 1 then return 2 end
return 1
