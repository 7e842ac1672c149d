--[[
  reap: returns entries whose lease ran out (their holder died or stalled) to ready, due now. The
  attempt is not counted: nobody knows whether it reached the remote server.

  KEYS[1] leases  ZSET of the destination
  KEYS[2] ready   ZSET of the destination
  ARGV[1] now     ms; leases with expiry <= now are expired
  ARGV[2] limit   entries moved at most in this call (bounds the time the script holds the server)

  Returns {moved, left}: the number of entries moved, and how many entries the destination holds
  after (ready + leased), which tells the reaper a destination has nothing queued.
]]
--@include lease
local expired = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
local owners = leaseOwners(KEYS[1])
for i = 1, #expired do
  redis.call('ZREM', KEYS[1], expired[i])
  redis.call('HDEL', owners, expired[i])
  redis.call('ZADD', KEYS[2], ARGV[1], expired[i])
end
local leased = redis.call('ZCARD', KEYS[1])
-- Nothing leased: no token is in force (one a path left behind goes here).
if leased == 0 then redis.call('DEL', owners) end
return {#expired, leased + redis.call('ZCARD', KEYS[2])}
