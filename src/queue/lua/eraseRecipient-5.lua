--[[
  eraseRecipient: removes one recipient from a message's record, for the erasure of an address
  (store/privacy.ts). All keys share the message's hash tag.

  KEYS[1] meta   HASH   {m:<id>}:meta   (rcpts JSON [{address, domain}]; a campaign has none; dsn
                                          JSON {rcpts: [{orcpt, …} | null]}, some SMTP submissions)
  KEYS[2] body   STRING {m:<id>}:body
  KEYS[3] links  LIST   {m:<id>}:links
  KEYS[4] marks  HASH   {m:<id>}:track  (fields "<cls><kind>:<idx>[:<link>]", "hc:<idx>", "b:<idx>",
                                          "fc:<idx>"/"fh:<idx>": a complaint/hard bounce counted, store/recipients.ts)
  KEYS[5] stats  HASH   {m:<id>}:stats
  ARGV[1] idx
  ARGV[2] address  lower-case; every occurrence in the body (any case) becomes ARGV[3], and in an
                   API message's spec its display name goes too
  ARGV[3] replacement
  ARGV[4] ttlMs    how long the erased mark is kept (the records' retention)

  Recipient idx becomes the tombstone {"address":"","domain":"","erased":true}, so indexes of the
  others keep their meaning. When every recipient is erased the whole message goes. The recipient's
  tracking marks go in both cases (a campaign's too), and an erased mark takes their place: 'x:<idx>',
  or 'x:*' when the whole message went. The tracking scripts record nothing for an erased recipient
  (recordTrackingOpens-3.lua, recordTrackingEvent-4.lua), so an old link writes nothing about them
  again, and feedback mail that names the recipient, or the message once its record is gone, is
  dropped (store/tombstone.ts, feedback/process.ts). The body keeps its TTL.

  Returns 2 message deleted, 1 recipient erased, 0 no such record.
]]
local idx = ARGV[1]
local marks = redis.call('HKEYS', KEYS[4])
local pattern = '^m?[ocub]:' .. idx .. '$'
local clickPattern = '^m?c:' .. idx .. ':%d+$'
local human = 'hc:' .. idx
local feedbackPattern = '^f[ch]:' .. idx .. '$'
for _, f in ipairs(marks) do
  if f == human or string.find(f, pattern) or string.find(f, clickPattern) or string.find(f, feedbackPattern) then redis.call('HDEL', KEYS[4], f) end
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
-- The address as it was stored (as submitted): its non-ASCII capitals are not in ARGV[2]'s case as
-- Lua's string.lower sees them (ASCII only), so it is searched for as written too (below).
local stored = nil
if type(rcpts[i]) == 'table' then
  if type(rcpts[i].address) == 'string' and rcpts[i].address ~= '' then stored = rcpts[i].address end
  rcpts[i] = { address = '', domain = '', erased = true }
end
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
-- An SMTP submission's DSN parameters (src/store/messages.ts MessageDsn): the recipient's ORCPT is
-- an address too (its own, as a rule).
local dsnJson = redis.call('HGET', KEYS[1], 'dsn')
if dsnJson then
  local dsn = cjson.decode(dsnJson)
  if type(dsn.rcpts) == 'table' and type(dsn.rcpts[i]) == 'table' and dsn.rcpts[i].orcpt then
    dsn.rcpts[i].orcpt = nil
    redis.call('HSET', KEYS[1], 'dsn', cjson.encode(dsn))
  end
end

-- Whether text[i..j] is the inside of a JSON string: no quote but an escaped one.
local function jsonStringBody(text, i, j)
  local k = i
  while k <= j do
    local c = string.byte(text, k)
    if c == 92 then k = k + 2
    elseif c == 34 then return false
    else k = k + 1 end
  end
  return k == j + 1
end

-- An API message's spec (render/spec-record.ts: 'S2 ' + a JSON header line, or all JSON) keeps each
-- address as {"name":"…","address":"…"}: an erased address ({"address":"<replacement>"} by now)
-- loses its display name too. The last '{"name":"' before it opens its object: a JSON string
-- cannot hold that sequence unescaped.
local function dropNames(json, replacement)
  local needle = '","address":"' .. replacement .. '"}'
  local out, from = {}, 1
  while true do
    local s = string.find(json, needle, from, true)
    if not s then break end
    local open, scan = nil, from
    while true do
      local o = string.find(json, '{"name":"', scan, true)
      if not o or o > s then break end
      open, scan = o, o + 1
    end
    local stop = s + #needle
    if open and jsonStringBody(json, open + 9, s - 1) then
      out[#out + 1] = string.sub(json, from, open - 1)
      out[#out + 1] = '{"address":"' .. replacement .. '"}'
    else
      out[#out + 1] = string.sub(json, from, stop - 1)
    end
    from = stop
  end
  out[#out + 1] = string.sub(json, from)
  return table.concat(out)
end

--@include replaceAddress
-- Every form the address takes in a message: as lower-cased here (any ASCII case), as stored, and
-- percent-encoded in a URL ('@' as %40: a link that names its recipient, ?email=ann%40example.org).
local function redact(text)
  local out = replaceAddress(text, ARGV[2], ARGV[3])
  if stored and stored ~= ARGV[2] then out = replaceAddress(out, stored, ARGV[3], true) end
  local at = string.find(ARGV[2], '@', 1, true)
  if at then
    local encoded = string.sub(ARGV[2], 1, at - 1) .. '%40' .. string.sub(ARGV[2], at + 1)
    out = replaceAddress(out, encoded, (string.gsub(ARGV[3], '@', '%%40')))
  end
  return out
end

-- The link table outlives the body (click redirects of a delivered message): a link that names the
-- recipient is redacted in place, its index kept (the tokens in the other copies point at it).
local links = redis.call('LRANGE', KEYS[3], 0, -1)
for n, link in ipairs(links) do
  local updated = redact(link)
  if updated ~= link then redis.call('LSET', KEYS[3], n - 1, updated) end
end

local body = redis.call('GET', KEYS[2])
if body then
  local updated = redact(body)
  if string.sub(updated, 1, 3) == 'S2 ' then
    local lf = string.find(updated, '\n', 1, true) or (#updated + 1)
    updated = dropNames(string.sub(updated, 1, lf - 1), ARGV[3]) .. string.sub(updated, lf)
  elseif string.sub(updated, 1, 1) == '{' then
    updated = dropNames(updated, ARGV[3])
  end
  if updated ~= body then redis.call('SET', KEYS[2], updated, 'KEEPTTL') end
end
return 1
