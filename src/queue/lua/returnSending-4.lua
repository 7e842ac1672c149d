--[[
  returnSending: gives back `n` campaign copies counted by takeSending-4.lua that were not sent
  (given back to the queue, settled without reaching a server). A counter whose window is over
  (its key expired) is left alone: recreating it would leave a key with no TTL. Never below 0.

  KEYS[1..4] the counters takeSending counted on
  ARGV[1]    n
  ARGV[2..5] '1' for each counter that was counted on, '' for the others

  Returns the number of counters decremented.
]]
local n = tonumber(ARGV[1])
local done = 0
for i = 1, 4 do
  if ARGV[1 + i] == '1' then
    local v = redis.call('GET', KEYS[i])
    if v then
      redis.call('DECRBY', KEYS[i], math.min(n, tonumber(v)))
      done = done + 1
    end
  end
end
return done
