--[[
  moveBatch: settles a webhook batch after its POST (housekeeping/webhooks.ts), only if it is still
  the one that was sent: delivered, it leaves the outbox; failed, it is put back for a retry or moved
  to the dead-letter list. It also drops a batch the dispatcher found unreadable, with its age. An
  erasure (store/privacy.ts) may have rewritten or removed it while the POST ran; putting the old text
  back would restore what was erased, so then nothing is done. All keys share the account's hash tag.

  KEYS[1] outbox  ZSET {a:<account>}:wh:<id>:outbox  (member = batch JSON, score = next attempt, ms)
  KEYS[2] dead    LIST {a:<account>}:wh:<id>:dead
  KEYS[3] ages    ZSET {a:<account>}:wh:<id>:ages    (member = batch id, score = its oldest event, ms)
  KEYS[4] events  STRING {a:<account>}:wh:<id>:events (events in the outbox: queueBatch-4.lua)
  ARGV[1] member   the batch as it was read
  ARGV[2] next     the batch to store (attempt count and error updated); '' when delivered
  ARGV[3] score    next attempt time (ms) to retry it; 'dead' to move it to dead letters; 'delivered';
                   'dropped' (unreadable: it leaves the outbox and the ages, as when delivered)
  ARGV[4] deadMax  dead letters kept per endpoint (the oldest go first)
  ARGV[5] batchId  the batch's id: a batch that leaves the outbox leaves the ages (no longer awaited);
                   '' when an unreadable batch's id cannot be read
  ARGV[6] n        the batch's events (0 when unreadable)

  An outbox left empty awaits nothing: its ages and event count go whole. An age or count left wrong
  (an unreadable batch whose id or size could not be read) is set right there; before, its age stayed
  for good and the lag gauge reported it, older each pass.

  Returns { moved, dropped }: moved 1, or 0 when the batch had changed or gone (left as it is);
  dropped, the oldest dead letters trimmed to keep the list at deadMax (the caller says so: nobody
  can replay them any more).
]]
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return { 0, 0 } end
if ARGV[3] ~= 'dead' and ARGV[3] ~= 'delivered' and ARGV[3] ~= 'dropped' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  return { 1, 0 }
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3], KEYS[4])
else
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('DECRBY', KEYS[4], ARGV[6])
end
if ARGV[3] ~= 'dead' then return { 1, 0 } end
local over = redis.call('RPUSH', KEYS[2], ARGV[2]) - tonumber(ARGV[4])
if over > 0 then redis.call('LTRIM', KEYS[2], over, -1) end
return { 1, math.max(over, 0) }
