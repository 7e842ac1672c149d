--[[
  queueDepth: what destinations hold, for the queue gauges and `sluice queue` (queue/stats.ts). Read-only.
  Four keys a destination; called with one destination's keys, or (queueDepthKeys, a single Redis
  server, not a cluster) with several destinations' keys one after another.

  KEYS[4i+1] ready   ZSET recipients' entries, and campaign pointers "@<campaignId>"
  KEYS[4i+2] leases  ZSET entries being delivered
  KEYS[4i+3] cqpos   HASH campaignId -> position: the campaigns with recipients queued here, each in
                     the LIST "<dest>:cq:<campaignId>" (same hash tag: ready's name with 'ready' replaced)
  KEYS[4i+4] rule    STRING the shaping rule the dispatcher last resolved for the destination, if any

  Returns { ready, waiting, leased, rule, ... } a destination: ready = entries of the ready set other
  than campaign pointers; waiting = the campaign recipients behind those pointers (a pointer stands
  for its list, paused campaigns' included); rule = '' when none is recorded.
]]
local out = {}
for k = 1, #KEYS, 4 do
  local ready = KEYS[k]
  local entries = redis.call('ZCARD', ready)
  local waiting = 0
  local base = string.sub(ready, 1, -6)
  local ids = redis.call('HKEYS', KEYS[k + 2])
  for i = 1, #ids do
    waiting = waiting + redis.call('LLEN', base .. 'cq:' .. ids[i])
    if redis.call('ZSCORE', ready, '@' .. ids[i]) then entries = entries - 1 end
  end
  out[#out + 1] = entries
  out[#out + 1] = waiting
  out[#out + 1] = redis.call('ZCARD', KEYS[k + 1])
  out[#out + 1] = redis.call('GET', KEYS[k + 3]) or ''
end
return out
