--[[
  storeMessage: writes an accepted message's record and its body in one atomic step (one command,
  where MULTI HSET SET EXEC was four and a pipeline of its own).

  KEYS[1] meta  HASH   {m:<id>}:meta
  KEYS[2] body  STRING {m:<id>}:body
  ARGV[1] body  raw MIME or a spec record (bytes)
  ARGV[2..] field, value, field, value, ... of the meta hash (at least one pair)

  Returns 1.
]]
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SET', KEYS[2], ARGV[1])
return 1
