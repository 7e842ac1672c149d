--[[
  recordTrackingOpens: marks a batch of opens in one call, each first or repeat, so the tracking
  server spends one round trip on many pixels instead of one each. The fields are those of
  recordTrackingEvent-2.lua ('o:<idx>' for a presumed person, 'mo:<idx>' for a known machine).

  The file name says 1 key: the script loader defines it that way, for one message. The tracking
  server also calls it with many keys on a single Redis server (where every key is on the one node);
  on Redis Cluster it calls it once per message, whose keys share the message's hash tag.

  KEYS[1..n]  marks  HASH of each message in the batch, each key once
  ARGV[1]     ttlMs  how long the marks are kept (the message's retention)
  ARGV[2..]   triples, one per open, in arrival order:
                keyIndex  which KEYS entry holds the mark
                field     'o:<idx>' or 'mo:<idx>'
                now       ms of the open (the value of a first mark)

  Returns {first (1|0), ...}, one per triple, in their order: of two opens of one recipient in the
  same batch, the earlier is the first.
]]
local out = {}
for i = 2, #ARGV, 3 do
  out[#out + 1] = redis.call('HSETNX', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
for k = 1, #KEYS do redis.call('PEXPIRE', KEYS[k], ARGV[1]) end
return out
