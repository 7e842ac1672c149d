--[[
  releaseLock: deletes a lock key only if it still holds the caller's token (a lock that expired and
  was taken by another process is left alone).

  KEYS[1] lock
  ARGV[1] token
  Returns 1 when released, 0 otherwise.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
