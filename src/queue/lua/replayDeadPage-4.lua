--[[
  replayDeadPage: moves a page of an endpoint's dead-letter batches back into its outbox, only if the
  head of the dead-letter list is still exactly the page that was read (housekeeping/webhooks.ts
  replayDeadLetters). Between the read and this script a dispatcher may have pushed a batch and
  trimmed the oldest (the list is bounded), or an erasure may have rewritten one: trimming by count
  then would drop a batch nobody replayed. All keys share the account's hash tag. A replay is the
  operator's call: it is not held to webhooks.maxOutbox (the dispatcher's new batches are).

  KEYS[1] dead    LIST {a:<account>}:wh:<id>:dead
  KEYS[2] outbox  ZSET {a:<account>}:wh:<id>:outbox  (member = batch JSON, score = when due, ms)
  KEYS[3] ages    ZSET {a:<account>}:wh:<id>:ages    (member = batch id, score = its oldest event, ms)
  KEYS[4] events  STRING {a:<account>}:wh:<id>:events (events in the outbox: queueBatch-4.lua)
  ARGV[1] score   when the replayed batches are due (ms)
  ARGV[2] n       how many items were read from the head of the list
  ARGV[3 .. 2+n]  those items, as read
  ARGV[3+n ..]    per batch to queue for them (fresh attempt counts; unreadable items have none):
                  the batch, its id, its oldest event's time (ms), its events

  Returns 1 moved, 0 the list's head had changed (nothing done; the caller reads again).
]]
local n = tonumber(ARGV[2])
local head = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #head ~= n then return 0 end
for i = 1, n do
  if head[i] ~= ARGV[2 + i] then return 0 end
end
redis.call('LTRIM', KEYS[1], n, -1)
local held = tonumber(redis.call('GET', KEYS[4]) or '0')
if held < 0 or redis.call('ZCARD', KEYS[2]) == 0 then held = 0 end
for i = 3 + n, #ARGV, 4 do
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
  redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 1])
  held = held + tonumber(ARGV[i + 3])
end
if held > 0 then redis.call('SET', KEYS[4], held) end
return 1
