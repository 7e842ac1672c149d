--[[
  refundTokens: gives back tokens taken but not used (fewer entries were due than granted), never
  above a bucket's limit.

  KEYS[1] bucket  HASH as in takeTokens-1.lua
  ARGV[1] now     ms
  ARGV[2] n       tokens to return
  ARGV[3] perSecond, ARGV[4] perMinute, ARGV[5] perHour  limits, 0 = none

  Returns the number of buckets updated.
]]
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local windows = { { 's', tonumber(ARGV[3]), 1000 }, { 'm', tonumber(ARGV[4]), 60000 }, { 'h', tonumber(ARGV[5]), 3600000 } }
local updated = 0
for i = 1, 3 do
  local name, limit, span = windows[i][1], windows[i][2], windows[i][3]
  if limit > 0 then
    local vals = redis.call('HMGET', KEYS[1], name, name .. ':t')
    local tokens, at = tonumber(vals[1]), tonumber(vals[2])
    -- a missing bucket is full (or expired, which means full): nothing to give back
    if tokens and at then
      if now > at then
        tokens = tokens + (now - at) * limit / span
        at = now
      end
      tokens = math.min(limit, tokens + n)
      redis.call('HSET', KEYS[1], name, string.format('%.6f', tokens), name .. ':t', string.format('%d', at))
      updated = updated + 1
    end
  end
end
return updated
