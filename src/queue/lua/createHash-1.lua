--[[
  createHash: writes a new record's hash only if its key is free, so a record whose random id another
  process drew too (same millisecond, 1 in 2^30 a pair) is never overwritten: the caller takes
  another id (src/core/ids.ts withFreeId). Contact lists and stored feedback mail use it.

  KEYS[1]  record   HASH
  ARGV[1]  ttlMs    its expiry in ms, or 0 for none
  ARGV[2…] field, value, field, value, …

  Returns 1 when written, 0 when the key was taken (nothing is written).
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
