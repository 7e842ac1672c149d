--[[
  queueBatch: puts a new webhook batch into an endpoint's outbox (housekeeping/webhooks.ts route),
  unless the outbox already holds maxOutbox events: then the batch goes to the endpoint's dead-letter
  list instead, to be replayed once the endpoint is back. An endpoint that stays down otherwise kept
  its account's events in Redis for the whole retry window, and at volume filled Redis (noeviction),
  which stopped all sending. The new batch is the one turned away: the outbox's oldest cannot be found
  without reading it all (its scores are due times, which retries move), and what has waited longest
  is delivered first when the endpoint comes back. One script: two dispatchers routing at once cannot
  both see room for the last events. All keys share the account's hash tag.

  KEYS[1] outbox  ZSET {a:<account>}:wh:<id>:outbox  (member = batch JSON, score = when due, ms)
  KEYS[2] ages    ZSET {a:<account>}:wh:<id>:ages    (member = batch id, score = its oldest event, ms)
  KEYS[3] dead    LIST {a:<account>}:wh:<id>:dead
  KEYS[4] events  STRING {a:<account>}:wh:<id>:events (events in the outbox; see below)
  ARGV[1] score     when the batch is due (ms)
  ARGV[2] member    the batch: JSON {"b":…,"n":0,"f":…,"e":[…]}
  ARGV[3] batchId   its id
  ARGV[4] oldest    its oldest event's time (ms)
  ARGV[5] n         its events
  ARGV[6] maxOutbox events an outbox may hold (webhooks.maxOutbox)
  ARGV[7] deadMax   dead letters kept per endpoint (the oldest go first)

  The event count is kept by the scripts and transactions that add or take batches (moveBatch,
  replayDeadPage, an erasure). One a failed command or an unreadable batch left wrong is set right
  when the outbox is found empty here.

  Returns { queued, dropped }: queued 1 in the outbox, 0 dead-lettered (its lastError says why);
  dropped, the oldest dead letters trimmed to keep the list at deadMax.
]]
local n = tonumber(ARGV[5])
local held = tonumber(redis.call('GET', KEYS[4]) or '0')
if held < 0 or redis.call('ZCARD', KEYS[1]) == 0 then held = 0 end
if held + n <= tonumber(ARGV[6]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  redis.call('SET', KEYS[4], held + n)
  return { 1, 0 }
end
if held == 0 then redis.call('DEL', KEYS[4]) end
local dead = string.sub(ARGV[2], 1, -2) .. ',"lastError":"outbox full (webhooks.maxOutbox)"}'
local over = redis.call('RPUSH', KEYS[3], dead) - tonumber(ARGV[7])
if over > 0 then redis.call('LTRIM', KEYS[3], over, -1) end
return { 0, math.max(over, 0) }
