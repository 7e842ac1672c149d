--[[
  keepGone: keeps a deleted contact's address in a campaign's {m:<id>}:gone (store/privacy.ts
  keepCopiesFindable) for ttlMs from its deletion, and no longer. The key's TTL is renewed by every
  deletion in the campaign (every past campaign sent to a list, for each contact deleted from it), so
  with steady deletions a whole-key TTL never ends: each field keeps its own deletion time in
  :goneAt, and the fields deleted more than ttlMs before this one go here, at most TRIM_MAX a call
  (their ZRANGEBYSCORE is O(log N + TRIM_MAX)), as an address's index trims its references
  (lib/addRef.lua). The contact's copies also stop recording opens and clicks of a person who is no
  longer in the list: an 'x:<no>' mark in the campaign's marks, as an erased recipient's
  (eraseRecipient-5.lua), which the tracking scripts already read with the mark they look up, so an
  open costs nothing more. Its unsubscribe link still works (it reads :gone). All keys share the
  campaign's hash tag.

  KEYS[1] gone    HASH {m:<id>}:gone    "<no>" → address; "d:<digest>" → the numbers, space-separated
  KEYS[2] goneAt  ZSET {m:<id>}:goneAt  "<no> <digest>" → deleted (ms)
  KEYS[3] marks   HASH {m:<id>}:track   (recordTrackingEvent-4.lua); gets "x:<no>"
  ARGV[1] no       the contact's number; '' only trims (the retention walk, housekeeping/retention.ts:
                   a lowered retention applies to the fields kept under the longer one)
  ARGV[2] address
  ARGV[3] digest   the address's salted digest (store/address-digest.ts)
  ARGV[4] at       ms, the deletion
  ARGV[5] ttlMs    how long a copy's data can live (ingress/persist.ts refsTtlMs)

  Returns the fields trimmed.
]]
local TRIM_MAX = 100

-- The space-separated numbers of a "d:" field without `no` (or with it, `add`), '' when none is left.
local function numbers(value, no, add)
  local out = {}
  for n in string.gmatch(value or '', '%d+') do
    if n ~= no then out[#out + 1] = n end
  end
  if add then out[#out + 1] = no end
  return table.concat(out, ' ')
end

local at, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', at - ttl), 'LIMIT', 0, TRIM_MAX)
for _, member in ipairs(stale) do
  local no, digest = string.match(member, '^(%d+) (.+)$')
  if no then
    local field = 'd:' .. digest
    local rest = numbers(redis.call('HGET', KEYS[1], field), no, false)
    redis.call('HDEL', KEYS[1], no)
    if rest == '' then redis.call('HDEL', KEYS[1], field) else redis.call('HSET', KEYS[1], field, rest) end
  end
  redis.call('ZREM', KEYS[2], member)
end

if ARGV[1] == '' then return #stale end

local field = 'd:' .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], field, numbers(redis.call('HGET', KEYS[1], field), ARGV[1], true))
redis.call('ZADD', KEYS[2], 'GT', at, ARGV[1] .. ' ' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
-- The marks' TTL is the tracking scripts' (the records' retention, set again by each mark): only made
-- longer here. A later mark of another contact sets it back, so the block lasts until the campaign
-- has had no mark for the records' retention, and the whole hash expires.
local left = redis.call('PTTL', KEYS[3])
redis.call('HSET', KEYS[3], 'x:' .. ARGV[1], '1')
if left == -2 or (left >= 0 and left < ttl) then redis.call('PEXPIRE', KEYS[3], ttl) end
return #stale
