--[[
  renewLease: extends a key's TTL only while it still holds exactly `value` (the holder's own marker),
  never re-creating it: a key that expired, was answered or was taken by another request stays as it
  is. Used by the HTTP API's in-flight Idempotency-Key marker (src/ingress/idempotency.ts).

  KEYS[1] the key
  ARGV[1] value  the marker as the holder wrote it
  ARGV[2] ttlMs
  Returns 1 when renewed, 0 otherwise.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
