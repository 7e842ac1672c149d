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
  ARGV[2] start   where in the list the page was read (the unreadable items kept before it)
  ARGV[3] n       how many items were read
  ARGV[4] mask    n characters, '1' for an item replayed, '0' for one kept (unreadable: it stays
                  where it is, for the operator to look at, and the next page is read after it)
  ARGV[5 .. 4+n]  those items, as read
  ARGV[5+n ..]    per batch to queue for them (fresh attempt counts; unreadable items have none):
                  the batch, its id, its oldest event's time (ms), its events

  Returns 1 moved, 0 the list had changed there (nothing done; the caller reads again).
]]
local start = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local mask = ARGV[4]
local page = redis.call('LRANGE', KEYS[1], start, start + n - 1)
if #page ~= n then return 0 end
for i = 1, n do
  if page[i] ~= ARGV[4 + i] then return 0 end
end
if not string.find(mask, '0', 1, true) and start == 0 then
  redis.call('LTRIM', KEYS[1], n, -1)
else
  -- Out of the list by a mark no batch can be (batches are JSON), then one LREM from the head.
  local gone = 0
  for i = 1, n do
    if string.sub(mask, i, i) == '1' then
      redis.call('LSET', KEYS[1], start + i - 1, '\0replayed')
      gone = gone + 1
    end
  end
  if gone > 0 then redis.call('LREM', KEYS[1], gone, '\0replayed') end
end
local held = tonumber(redis.call('GET', KEYS[4]) or '0')
if held < 0 or redis.call('ZCARD', KEYS[2]) == 0 then held = 0 end
for i = 5 + n, #ARGV, 4 do
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
  redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 1])
  held = held + tonumber(ARGV[i + 3])
end
if held > 0 then redis.call('SET', KEYS[4], held) end
return 1
