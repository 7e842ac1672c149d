--[[
  createHash: writes a new record's hash only if its key is free, so a record whose random id another
  process drew too (same millisecond, 1 in 2^30 a pair) is never overwritten: the caller takes
  another id (src/core/ids.ts withFreeId). Contact lists and stored feedback mail use it.

  KEYS[1]  record   HASH
  ARGV[1]  ttlMs    its expiry in ms, or 0 for none
  ARGV[2…] field, value, field, value, …

  Returns 1 when written, 0 when the key was taken (nothing is written). A record holding every
  field of this one as given is this write's own, run again by the Redis client after a dropped
  connection lost its reply: 1, as the first run answered (the caller wrote a second record under
  another id, and the first was left behind, unlisted).
]]
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 2, #ARGV - 1, 2 do
    if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
  end
  return 1
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
