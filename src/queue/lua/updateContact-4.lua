--[[
  updateContact: changes or deletes one contact of a list (src/store/contacts.ts).

  KEYS[1] meta      HASH  of the list (status counters, count)
  KEYS[2] contacts  HASH  contact number → compact JSON {e, s, c, u, f}
  KEYS[3] emails    HASH  normalised address → contact number
  KEYS[4] fields    HASH  field name → order of first appearance (a new name is added)
  ARGV[1] account   the list must belong to it; '' = any (callers that hold a contact number already)
  ARGV[2] by        'no' or 'key': how ARGV[3] names the contact
  ARGV[3] ref       contact number, or normalised address
  ARGV[4] now       ms
  ARGV[5] status    's', 'u', 'b', 'c', or '' to keep it
  ARGV[6] fields    JSON object: a string value sets the field, false removes it; '' = no change
  ARGV[7] delete    '1' removes the contact (ARGV[5], ARGV[6] ignored)
  ARGV[8] key       when by = 'no': the contact's normalised address, to unindex it on delete
  ARGV[9] maxFields fields a contact may have: a patch that would leave it more changes nothing
  ARGV[10] maxListFields  field names the list may have: a patch that would add more changes nothing

  Returns -1 when the list does not exist or is another account's, 0 when there is no such
  contact, -2 when the patch would leave the contact more than maxFields fields, -3 when it would
  give the list more than maxListFields field names; else the
  contact's JSON as it is now (as it was, for a delete) and its number.
]]
local account = redis.call('HGET', KEYS[1], 'account')
if not account or (ARGV[1] ~= '' and account ~= ARGV[1]) then return -1 end

local STATUS = { s = 'subscribed', u = 'unsubscribed', b = 'bounced', c = 'complained' }
local no, key
if ARGV[2] == 'key' then
  key = ARGV[3]
  no = redis.call('HGET', KEYS[3], key)
  if not no then return 0 end
else
  no = ARGV[3]
  key = ARGV[8]
end
local raw = redis.call('HGET', KEYS[2], no)
if not raw then return 0 end
local c = cjson.decode(raw)
local now = ARGV[4]

if ARGV[7] == '1' then
  redis.call('HDEL', KEYS[2], no)
  if redis.call('HGET', KEYS[3], key) == tostring(no) then redis.call('HDEL', KEYS[3], key) end
  redis.call('HINCRBY', KEYS[1], 'count', -1)
  redis.call('HINCRBY', KEYS[1], STATUS[c.s], -1)
  redis.call('HSET', KEYS[1], 'updated', now)
  return { raw, tonumber(no) }
end

-- The fields first, and checked before anything is written.
local patch = ARGV[6] ~= '' and cjson.decode(ARGV[6]) or nil
if patch then
  local n = 0
  for name, value in pairs(patch) do
    if value == false then c.f[name] = nil else c.f[name] = value end
  end
  for _ in pairs(c.f) do n = n + 1 end
  if n > tonumber(ARGV[9]) then return -2 end
  local fresh = {}
  for name, value in pairs(patch) do
    if value ~= false and redis.call('HEXISTS', KEYS[4], name) == 0 then fresh[#fresh + 1] = name end
  end
  local have = redis.call('HLEN', KEYS[4])
  if have + #fresh > tonumber(ARGV[10]) then return -3 end
  for k, name in ipairs(fresh) do redis.call('HSET', KEYS[4], name, have + k) end
end
local status = ARGV[5]
if status ~= '' and status ~= c.s then
  redis.call('HINCRBY', KEYS[1], STATUS[c.s], -1)
  redis.call('HINCRBY', KEYS[1], STATUS[status], 1)
  c.s = status
end
c.u = tonumber(now)
raw = cjson.encode(c)
redis.call('HSET', KEYS[2], no, raw)
redis.call('HSET', KEYS[1], 'updated', now)
return { raw, tonumber(no) }
