--[[
  purgeMessage: deletes a message whose account was deleted and leaves its tombstone (store/retention.ts
  purgeMessage, called by the retention walk, housekeeping/retention.ts). All keys share the message's
  hash tag. One step, so an erasure cannot land between the read of the erasure marks and the
  rewrite of the marks and lose its own.

  KEYS[1] meta    HASH   {m:<id>}:meta
  KEYS[2] body    STRING {m:<id>}:body
  KEYS[3] links   LIST   {m:<id>}:links
  KEYS[4] stats   HASH   {m:<id>}:stats
  KEYS[5] gone    HASH   {m:<id>}:gone
  KEYS[6] goneAt  ZSET   {m:<id>}:goneAt
  KEYS[7] marks   HASH   {m:<id>}:track  (recordTrackingEvent-4.lua; the erasure marks "x:<idx>",
                                          "x:*", store/tombstone.ts)
  ARGV[1] ttlMs   how long the tombstone is kept (the records' retention)

  KEYS[1..6] go. The marks lose every field but the erasure marks (opens, clicks, bounces and
  complaints are per-recipient engagement): an erased recipient stays erased, as mail about them is
  dropped as such even when it also went to postmaster (which keeps a deleted account's mail). x:* is
  'a' (the account was deleted) unless it says '1' (every recipient was erased): 'erased' wins. The
  marks then live ttlMs.

  The erasure marks are read with HSCAN MATCH, a page at a time: a message's marks can hold a field
  per recipient and per link, and the erasure marks are usually few.

  Returns how many of KEYS[1..6] existed (the marks are not counted: a second purge counts 0).
]]
local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
local kept = {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[7], cursor, 'MATCH', 'x:*', 'COUNT', 1000)
  cursor = page[1]
  local flat = page[2]
  for i = 1, #flat, 2 do kept[flat[i]] = flat[i + 1] end
until cursor == '0'
if kept['x:*'] ~= '1' then kept['x:*'] = 'a' end
redis.call('DEL', KEYS[7])
-- In slices: unpack puts every value on Lua's C stack (about 8,000; storeMessage-3.lua), and a
-- campaign's marks can hold an erased or deleted contact's mark per contact.
local fields = {}
local function flush()
  if #fields > 0 then redis.call('HSET', KEYS[7], unpack(fields)) end
  fields = {}
end
for field, value in pairs(kept) do
  fields[#fields + 1] = field
  fields[#fields + 1] = value
  if #fields >= 2000 then flush() end
end
flush()
redis.call('PEXPIRE', KEYS[7], ARGV[1])
return n
