--[[
  addWebhook: registers a webhook endpoint (store/webhooks.ts createWebhook) if the account has fewer
  than its limit, and if its random id is free (a twin drawn in the same millisecond is never
  overwritten: the caller takes another id). One script: concurrent POSTs each counted the endpoints
  before any of them wrote, and all were let in past the limit.

  KEYS[1] webhooks  HASH {a:<account>}:webhooks  (endpoint id → JSON record)
  ARGV[1] id        the new endpoint's id
  ARGV[2] record    its JSON record
  ARGV[3] max       endpoints an account may have

  Returns 1 written, 0 the id is taken, -1 the account has max endpoints (nothing written). A record
  under the id that is this one (the same JSON: its secret is sealed under a random nonce) is this
  write's own, run again by the Redis client after a dropped connection lost its reply: 1, as the
  first run answered (the caller registered a second endpoint under another id, its secret unknown
  to anyone, and every event went out twice).
]]
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if cur == ARGV[2] then return 1 end
  return 0
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
