--[[
  queueDepth: what destinations hold, for the queue gauges (queue/stats.ts queueTotals). Read-only.
  Four keys a destination; called with one destination's keys, or (queueDepthKeys, a single Redis
  server, not a cluster) with several destinations' keys one after another.

  KEYS[4i+1] ready   ZSET recipients' entries, and campaign pointers "@<campaignId>"
  KEYS[4i+2] leases  ZSET entries being delivered
  KEYS[4i+3] cqpos   HASH campaignId -> position: the campaigns with recipients queued here, each in
                     the LIST "<dest>:cq:<campaignId>" (same hash tag: ready's name with 'ready' replaced)
  KEYS[4i+4] rule    STRING the shaping rule the dispatcher last resolved for the destination, if any

  Returns { recipients, leased, rule, ... } a destination: recipients = ready entries other than
  pointers, plus the campaign recipients behind them (a pointer stands for its list); rule = '' when
  none is recorded.
]]
local out = {}
for k = 1, #KEYS, 4 do
  local ready = KEYS[k]
  local recipients = redis.call('ZCARD', ready)
  local base = string.sub(ready, 1, -6)
  local ids = redis.call('HKEYS', KEYS[k + 2])
  for i = 1, #ids do
    recipients = recipients + redis.call('LLEN', base .. 'cq:' .. ids[i])
    if redis.call('ZSCORE', ready, '@' .. ids[i]) then recipients = recipients - 1 end
  end
  out[#out + 1] = recipients
  out[#out + 1] = redis.call('ZCARD', KEYS[k + 1])
  out[#out + 1] = redis.call('GET', KEYS[k + 3]) or ''
end
return out
