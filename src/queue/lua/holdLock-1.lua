--[[
  holdLock: takes a lock key for `token`, or renews it when `token` holds it already, atomically (a
  GET then PEXPIRE could renew a lock that expired and went to another process in between).

  KEYS[1] lock
  ARGV[1] token
  ARGV[2] ttlMs
  Returns 1 when the caller holds the lock now, 0 when another token does.
]]
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
