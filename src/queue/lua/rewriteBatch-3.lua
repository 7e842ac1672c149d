--[[
  rewriteBatch: replaces one webhook batch of an endpoint's outbox where it is, without the events of
  an erased recipient (store/privacy.ts eraseFromWebhooks), only if it is still there as it was read.
  The erasure reads the outbox a page at a time (ZSCAN) and rewrites after: a batch delivered,
  dead-lettered or put back for a retry (a new member) in between was added again by the rewrite, a
  second copy sent again, and the outbox's event count lowered for events it no longer held.

  KEYS[1] outbox  ZSET {a:<account>}:wh:<id>:outbox  (batch JSON → next attempt, ms)
  KEYS[2] ages    ZSET {a:<account>}:wh:<id>:ages    (batch id → its oldest event's time)
  KEYS[3] events  STRING {a:<account>}:wh:<id>:events (events the outbox holds)
  ARGV[1] the batch as it was read
  ARGV[2] its replacement, at the same score ('' when none of its events is left)
  ARGV[3] the events taken out
  ARGV[4] the batch id ('' when it has none)
  ARGV[5] the oldest event kept, ms ('' when none: its age goes)

  Returns 1 rewritten, 0 when the batch is no longer there as it was read (nothing is written).
]]
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[1], score, ARGV[2]) end
redis.call('DECRBY', KEYS[3], ARGV[3])
if ARGV[4] ~= '' then
  if ARGV[5] == '' then redis.call('ZREM', KEYS[2], ARGV[4]) else redis.call('ZADD', KEYS[2], 'XX', ARGV[5], ARGV[4]) end
end
return 1
