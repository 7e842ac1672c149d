--[[
  claimFeedback: takes up to `limit` stored feedback mails whose processing is due (never finished
  after their receipt, or failed and due again), and moves each one's time `leaseMs` ahead, so that
  another process does not take it meanwhile; a process that dies while processing one leaves it to
  come due again then (src/feedback/raw-store.ts).

  KEYS[1]  feedback:pending  ZSET id → ms when it is due
  ARGV[1]  now (ms)
  ARGV[2]  leaseMs
  ARGV[3]  limit
  Returns the ids taken, oldest due first.
]]
local ids = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
for i = 1, #ids do
  redis.call('ZADD', KEYS[1], 'XX', until_, ids[i])
end
return ids
