--[[
  createCampaign: stores a new campaign (src/store/campaigns.ts) in one step, only if its id is free.
  A campaign lives under the keys of a message with its id (meta, body, link table), so a campaign
  whose random id an accepted message or another campaign drew too (same millisecond, 1 in 2^30 a
  pair) must not overwrite it: nothing is written and the caller takes another id.

  KEYS[1]  meta    HASH
  KEYS[2]  body    STRING  the template
  KEYS[3]  links   LIST    the template's link table
  ARGV[1]  body
  ARGV[2]  links   JSON array of URLs ([] for none)
  ARGV[3…] meta field, value, field, value, …

  Returns 1 when stored, 0 when the id was taken. A campaign under the id with this one's account,
  creation time and template is this write's own, run again by the Redis client after a dropped
  connection lost its reply: 1, as the first run answered (the caller stored a second campaign, and
  the first was left scheduled, unlisted and kept for good).
]]
local function metaOf(name)
  for i = 3, #ARGV - 1, 2 do
    if ARGV[i] == name then return ARGV[i + 1] end
  end
  return nil
end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  local cur = redis.call('HMGET', KEYS[1], 'account', 'createdAt')
  if cur[1] == metaOf('account') and cur[2] == metaOf('createdAt') and redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SET', KEYS[2], ARGV[1])
local links = cjson.decode(ARGV[2])
-- In slices: unpack of a very long table would exceed Lua's stack.
for i = 1, #links, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(links, i, math.min(i + 999, #links)))
end
return 1
