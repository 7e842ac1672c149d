--[[
  countReputation: adds an outcome count to a sender's reputation bucket, once per write id.

  KEYS[1] bucket  HASH {a:<account>}:rep:<bucketStart>, "<scope>|<kind>" → count (store/reputation.ts)
  KEYS[2] done    ZSET {a:<account>}:repdone, write id → until when it is kept (ms)
  ARGV[1] id      the write's id ('' for none: counted whatever)
  ARGV[2] now     ms
  ARGV[3] keepMs  how long the id is kept
  ARGV[4] ttlMs   the bucket's TTL from now
  ARGV[5..]       field, increment, field, increment, …

  A write whose reply a dropped connection lost is sent again by the Redis client (ioredis resends
  what was unanswered), and a count run twice would double a sender's complaints or deliveries: a
  complaint rate of 0.30 % read 0.40 %, and the sender was paused. The id makes the second run a
  no-op: a random one per write (the client's own resend), or one the caller derives from what it
  counts (a feedback mail's processing retried after a crash counts its copy once too).

  Returns 1 when counted, 0 when the id was counted before.
]]
if ARGV[1] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
  local keep = tonumber(ARGV[3])
  if redis.call('ZADD', KEYS[2], 'NX', tonumber(ARGV[2]) + keep, ARGV[1]) == 0 then return 0 end
  if redis.call('PTTL', KEYS[2]) < keep then redis.call('PEXPIRE', KEYS[2], keep) end
end
for i = 5, #ARGV - 1, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
