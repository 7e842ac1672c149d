--[[
  claimBatch: takes a due webhook batch for one POST (housekeeping/webhooks.ts) by pushing its score
  to the end of the lease, only if it is still due. Of two dispatchers that both read the batch as
  due, one takes it. (ZADD XX GT CH answered 1 to both when the second one's clock, and so its lease,
  was ahead: the batch was POSTed twice.)

  KEYS[1] outbox  ZSET {a:<account>}:wh:<id>:outbox  (member = batch JSON, score = next attempt, ms)
  ARGV[1] member      the batch as it was read
  ARGV[2] now         ms: the batch is due if its score is at most this
  ARGV[3] leaseUntil  ms: its score while this dispatcher POSTs it

  Returns 1 taken, 0 gone (delivered, erased) or taken by another.
]]
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
