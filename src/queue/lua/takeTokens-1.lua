--[[
  takeTokens: token buckets of one throttle scope, one per limited window. A bucket holds at most
  `limit` tokens and refills continuously at limit/window; a grant takes the same number of tokens
  from every bucket, so the grant is the minimum over the windows.

  KEYS[1] bucket  HASH  '<w>' = tokens left (float), '<w>:t' = time of that value (ms), for w in s, m, h
  ARGV[1] now     ms
  ARGV[2] want    tokens asked for (>= 1)
  ARGV[3] perSecond  limit, 0 = none
  ARGV[4] perMinute  limit, 0 = none
  ARGV[5] perHour    limit, 0 = none

  Returns { granted, retryAt } with retryAt = the time (ms) every bucket holds >= 1 token again when
  granted < want, else -1.
]]
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local windows = { { 's', tonumber(ARGV[3]), 1000 }, { 'm', tonumber(ARGV[4]), 60000 }, { 'h', tonumber(ARGV[5]), 3600000 } }

local granted = want
local state = {}
local longest = 0
for i = 1, 3 do
  local name, limit, span = windows[i][1], windows[i][2], windows[i][3]
  if limit > 0 then
    local vals = redis.call('HMGET', KEYS[1], name, name .. ':t')
    local tokens, at = tonumber(vals[1]), tonumber(vals[2])
    if not tokens or not at then
      tokens, at = limit, now
    elseif now > at then
      tokens = math.min(limit, tokens + (now - at) * limit / span)
      at = now
    end
    -- a clock behind the stored time (another host's skew) refills nothing and keeps the later time
    state[#state + 1] = { name, limit, span, tokens, at }
    if math.floor(tokens) < granted then granted = math.floor(tokens) end
    if span > longest then longest = span end
  end
end
if granted < 0 then granted = 0 end

local retryAt = -1
for i = 1, #state do
  local name, limit, span, tokens, at = state[i][1], state[i][2], state[i][3], state[i][4] - granted, state[i][5]
  redis.call('HSET', KEYS[1], name, string.format('%.6f', tokens), name .. ':t', string.format('%d', at))
  if granted < want and tokens < 1 then
    local ready = at + math.ceil((1 - tokens) * span / limit)
    if ready > retryAt then retryAt = ready end
  end
end
-- an untouched bucket is full again after the longest window: let it go
if longest > 0 then redis.call('PEXPIRE', KEYS[1], longest) end
return { granted, retryAt }
