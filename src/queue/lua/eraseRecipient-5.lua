--[[
  eraseRecipient: removes one recipient from a message's record, for the erasure of an address
  (store/privacy.ts). All keys share the message's hash tag.

  KEYS[1] meta   HASH   {m:<id>}:meta   (rcpts JSON [{address, domain}]; a campaign has none)
  KEYS[2] body   STRING {m:<id>}:body
  KEYS[3] links  LIST   {m:<id>}:links
  KEYS[4] marks  HASH   {m:<id>}:track  (fields "<cls><kind>:<idx>[:<link>]", "hc:<idx>", "b:<idx>")
  KEYS[5] stats  HASH   {m:<id>}:stats
  ARGV[1] idx
  ARGV[2] address  lower-case; every occurrence in the body (any case) becomes ARGV[3]
  ARGV[3] replacement
  ARGV[4] ttlMs    how long the erased mark is kept (the records' retention)

  Recipient idx becomes the tombstone {"address":"","domain":"","erased":true}, so indexes of the
  others keep their meaning. When every recipient is erased the whole message goes. The recipient's
  tracking marks go in both cases (a campaign's too), and an erased mark takes their place: 'x:<idx>',
  or 'x:*' when the whole message went. The tracking scripts record nothing for an erased recipient
  (recordTrackingOpens-2.lua, recordTrackingEvent-3.lua), so an old link writes nothing about them
  again. The body keeps its TTL.

  Returns 2 message deleted, 1 recipient erased, 0 no such record.
]]
local idx = ARGV[1]
local marks = redis.call('HKEYS', KEYS[4])
local pattern = '^m?[ocub]:' .. idx .. '$'
local clickPattern = '^m?c:' .. idx .. ':%d+$'
local human = 'hc:' .. idx
for _, f in ipairs(marks) do
  if f == human or string.find(f, pattern) or string.find(f, clickPattern) then redis.call('HDEL', KEYS[4], f) end
end
local function erasedMark(field)
  redis.call('HSET', KEYS[4], field, '1')
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end

local rcptsJson = redis.call('HGET', KEYS[1], 'rcpts')
if not rcptsJson then
  -- A campaign (its recipients are contacts) or a message already gone.
  erasedMark('x:' .. idx)
  return redis.call('EXISTS', KEYS[1])
end
local rcpts = cjson.decode(rcptsJson)
local i = tonumber(idx) + 1
if type(rcpts[i]) == 'table' then rcpts[i] = { address = '', domain = '', erased = true } end
local live = 0
for _, r in ipairs(rcpts) do
  if type(r) == 'table' and not r.erased then live = live + 1 end
end
if live == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  erasedMark('x:*')
  return 2
end
redis.call('HSET', KEYS[1], 'rcpts', cjson.encode(rcpts))
erasedMark('x:' .. idx)

local body = redis.call('GET', KEYS[2])
if body then
  local lower, needle = string.lower(body), ARGV[2]
  local parts, from = {}, 1
  while true do
    local s, e = string.find(lower, needle, from, true)
    if not s then break end
    parts[#parts + 1] = string.sub(body, from, s - 1)
    parts[#parts + 1] = ARGV[3]
    from = e + 1
  end
  if #parts > 0 then
    parts[#parts + 1] = string.sub(body, from)
    redis.call('SET', KEYS[2], table.concat(parts), 'KEEPTTL')
  end
end
return 1
