--[[
  upsertContacts: writes one batch of contacts into a list, atomically (src/store/contacts.ts).
  Rows are merged by normalised address: a known address keeps its number and gets the row's
  non-empty fields (later wins); a new one takes the list's next number (numbers are never reused).

  KEYS[1] meta      HASH  account, name, created, updated, nextNo, count, one counter per status
  KEYS[2] contacts  HASH  contact number → compact JSON {e, s, c, u, f}
  KEYS[3] emails    HASH  normalised address → contact number
  KEYS[4] fields    HASH  field name → order of first appearance (the columns of a CSV export)
  KEYS[5] seen      STRING bitmap: bit n set = contact n already written by this import
  ARGV[1] account   the list must belong to it
  ARGV[2] now       ms
  ARGV[3] seenTtl   ms the bitmap is kept after this batch; '0' = this call is not part of an import
  ARGV[4] maxFields fields a contact may have: a row whose merge would give its contact more is refused
  ARGV[5] maxListFields  field names the list may have: a row that would add more is refused
  ARGV[6..] rows, 4 values each:
            key     normalised address
            email   the address as written (normalised domain)
            fields  JSON object of non-empty string values
            status  's' subscribed, 'u' unsubscribed, 'b' bounced, 'c' complained; '' = none given

  A status other than 's' always applies (the later of two refusals wins); 's' never replaces a
  refusal: an import cannot resubscribe someone who unsubscribed, bounced or complained.

  Returns -1 when the list does not exist or is another account's; else a flat array with two
  numbers per row: outcome (1 created, 2 updated: the contact existed before this import,
  3 duplicate: an earlier row of this import wrote it, 4 refused: the contact would have more than
  maxFields fields, 5 refused: the list would have more than maxListFields field names; nothing of a
  refused row is written) and the contact number.
]]
if redis.call('HGET', KEYS[1], 'account') ~= ARGV[1] then return -1 end

local STATUS = { s = 'subscribed', u = 'unsubscribed', b = 'bounced', c = 'complained' }
local now = tonumber(ARGV[2])
local seenTtl = tonumber(ARGV[3])
local maxFields = tonumber(ARGV[4])
local maxListFields = tonumber(ARGV[5])
local nextNo = tonumber(redis.call('HGET', KEYS[1], 'nextNo') or '1')
local created = 0
local knownFields = {}
local fieldCount = nil
local inBatch = {}
local out = {}

-- The names of `f` the list does not have yet.
local function newNames(f)
  local names = {}
  for name in pairs(f) do
    if not knownFields[name] then
      if redis.call('HEXISTS', KEYS[4], name) == 1 then knownFields[name] = true else names[#names + 1] = name end
    end
  end
  return names
end

local function addNames(names)
  for _, name in ipairs(names) do
    knownFields[name] = true
    fieldCount = fieldCount + 1
    redis.call('HSET', KEYS[4], name, fieldCount)
  end
end

-- The number of fields a contact has once `f` is merged into its fields `have`.
local function merged(have, f)
  local n = 0
  for _ in pairs(have) do n = n + 1 end
  for name in pairs(f) do
    if have[name] == nil then n = n + 1 end
  end
  return n
end

for i = 6, #ARGV, 4 do
  local key, email, status = ARGV[i], ARGV[i + 1], ARGV[i + 3]
  local f = cjson.decode(ARGV[i + 2])
  local no = tonumber(redis.call('HGET', KEYS[3], key))
  local raw = no and redis.call('HGET', KEYS[2], no)
  local c = raw and cjson.decode(raw)
  local fresh = newNames(f)
  if #fresh > 0 then fieldCount = fieldCount or redis.call('HLEN', KEYS[4]) end
  local outcome
  if #fresh > 0 and fieldCount + #fresh > maxListFields then
    outcome = 5
  elseif c and merged(c.f, f) > maxFields then
    outcome = 4
  elseif c then
    for name, value in pairs(f) do c.f[name] = value end
    c.e = email
    if status ~= '' and status ~= c.s and (status ~= 's' or c.s == 's') then
      redis.call('HINCRBY', KEYS[1], STATUS[c.s], -1)
      redis.call('HINCRBY', KEYS[1], STATUS[status], 1)
      c.s = status
    end
    c.u = now
    redis.call('HSET', KEYS[2], no, cjson.encode(c))
    outcome = 2
  else
    no = nextNo
    nextNo = nextNo + 1
    if status == '' then status = 's' end
    redis.call('HSET', KEYS[2], no, cjson.encode({ e = email, s = status, c = now, u = now, f = f }))
    redis.call('HSET', KEYS[3], key, no)
    redis.call('HINCRBY', KEYS[1], STATUS[status], 1)
    created = created + 1
    outcome = 1
  end
  if outcome < 4 then
    addNames(fresh)
    if inBatch[no] then
      outcome = 3
    else
      inBatch[no] = true
      if seenTtl > 0 and redis.call('SETBIT', KEYS[5], no, 1) == 1 then outcome = 3 end
    end
  end
  out[#out + 1] = outcome
  out[#out + 1] = no
end

if created > 0 then redis.call('HINCRBY', KEYS[1], 'count', created) end
redis.call('HSET', KEYS[1], 'nextNo', nextNo, 'updated', now)
if seenTtl > 0 then redis.call('PEXPIRE', KEYS[5], seenTtl) end
return out
