--[[
  reap: returns entries whose lease ran out (their holder died or stalled) to ready, due now. The
  attempt is not counted: nobody knows whether it reached the remote server.

  KEYS[1] leases  ZSET of the destination
  KEYS[2] ready   ZSET of the destination
  KEYS[3] owed    ZSET of the destination: copies owed a count on their message or campaign (lib/owed.lua)
  ARGV[1] now     ms; leases with expiry <= now are expired
  ARGV[2] limit   entries moved at most in this call (bounds the time the script holds the server)
  ARGV[3] owedBefore  (optional) ms: return the copies owed since before then, ARGV[4] of them at most
  ARGV[4] owedLimit

  Returns {moved, left, owed…}: the number of entries moved, how many entries the destination holds
  after (ready + leased + owed counts), which tells the reaper a destination has nothing queued, and
  the members of the owed set noted before owedBefore (a crash left them: the reaper counts them).
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
local out = {#expired, leased + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])}
if ARGV[3] ~= nil and ARGV[3] ~= '' then
  local owed = redis.call('ZRANGE', KEYS[3], '-inf', '(' .. ARGV[3], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[4]))
  for i = 1, #owed do out[#out + 1] = owed[i] end
end
return out
