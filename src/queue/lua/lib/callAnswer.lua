-- A call's answer, kept a while under the call's own id. A write whose reply a dropped connection
-- lost is sent again by the Redis client (ioredis resends what was unanswered), and would count
-- twice; a script that keeps its answer under a key named by a random id of the call (or an id the
-- caller derives from what it counts) returns that answer to the second run and writes nothing.
-- Used by takeSending-1.lua (quota and rates) and countReputation-2.lua (a sender's figures).

-- earlierAnswer(key): the answer a run of this call kept, or false.
local function earlierAnswer(key)
  return redis.call('GET', key)
end

-- keepAnswer(key, answer, keepMs): keeps this run's answer (a string) for keepMs.
local function keepAnswer(key, answer, keepMs)
  redis.call('SET', key, answer, 'PX', keepMs)
end
