--[[
  eraseEntry: takes one recipient of a message or campaign out of a destination's queue and deletes
  its delivery record, for the erasure of an address (store/privacy.ts). All keys share the
  destination's hash tag.

  KEYS[1] ready   ZSET {d:<dest>}:ready
  KEYS[2] leases  ZSET {d:<dest>}:leases
  KEYS[3] rs      HASH {d:<dest>}:rs:<msgId>:<idx>  (its `attempts` bounds the entry's attempt numbers)
  KEYS[4] cq      LIST {d:<dest>}:cq:<campaignId>    (a campaign's waiting contact numbers; for a message
                                                     a key that does not exist)
  ARGV[1] msgId
  ARGV[2] idx      recipient index (a campaign's contact number)
  ARGV[3] floor    attempt numbers tried at least up to this (a record may be missing while queued)
  ARGV[4] now      ms
  ARGV[5] owed     the count the copy then owes its message or campaign (lib/owed.lua), noted when
                   the recipient was pending: its count is another call (another slot on a cluster),
                   and a crash before it would leave the message or campaign pending for good; the
                   reaper makes what is left owed

  Entries are "<msgId>:<idx>:<attempt>"; attempt n is queued after n attempts, so the numbers to try
  are 0 … attempts+1. A leased entry removed here makes its holder's outcome a no-op; the copy it is
  sending at that moment may still go out.

  Returns the number of queue entries removed (ready, lease or waiting number): > 0 means the
  recipient was still pending.
]]
--@include lease
--@include owed
local attempts = tonumber(redis.call('HGET', KEYS[3], 'attempts') or '0') or 0
local top = math.max(attempts + 1, tonumber(ARGV[3]) or 0)
local removed = 0
for a = 0, top do
  local member = ARGV[1] .. ':' .. ARGV[2] .. ':' .. a
  removed = removed + redis.call('ZREM', KEYS[1], member) + takeLease(KEYS[2], member, '')
end
removed = removed + redis.call('LREM', KEYS[4], 0, ARGV[2])
redis.call('DEL', KEYS[3])
if removed > 0 then owe(KEYS[2], ARGV[4], ARGV[5]) end
return removed
