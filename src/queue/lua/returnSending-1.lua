--[[
  returnSending: gives back `n` campaign copies counted by takeSending-1.lua that were not sent
  (given back to the queue, settled without reaching a server), or a submission's recipients whose
  message could not be stored (accounts/limits.ts reserveSending's release). A counter whose window is over (its
  key expired) is left alone: recreating it would leave a key with no TTL. Never below 0. The file
  name says 1 key: as many as takeSending counted on (returnSendingKeys).

  KEYS[i]  a counter takeSending counted on
  ARGV[1]  n

  Returns the number of counters decremented.
]]
local n = tonumber(ARGV[1])
local done = 0
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then
    redis.call('DECRBY', KEYS[i], math.min(n, tonumber(v)))
    done = done + 1
  end
end
return done
