--[[
  storeMessage: writes an accepted message's record, its body and its link table in one atomic step
  (one command, where MULTI HSET SET EXEC was four and the link table a MULTI of its own), unless the
  id is taken.

  Ids are a millisecond timestamp and 30 random bits (src/core/ids.ts). Two processes minting ids in
  the same millisecond collide once in 2^30 pairs: rare, but at a sustained 10,000 messages/s over
  several ingress processes that is a few times a day, and an overwrite would send one sender's
  message to another's recipients. So an id already in use is refused here, atomically, and the
  caller mints another (src/ingress/accept.ts).

  KEYS[1] meta   HASH   {m:<id>}:meta   (a campaign's record has the same key: its id is taken too)
  KEYS[2] body   STRING {m:<id>}:body
  KEYS[3] links  LIST   {m:<id>}:links  (written only when the message has tracked links)
  ARGV[1]        body   raw MIME or a spec record (bytes)
  ARGV[2]        n      how many link URLs follow
  ARGV[3..2+n]          the link URLs, in the message's order
  ARGV[3+n..]           field, value, field, value, ... of the meta hash (at least one pair)

  Returns 1 when stored, 0 when the id is taken (nothing written).
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3 + n))
redis.call('SET', KEYS[2], ARGV[1])
-- A table left by an earlier holder of the id (a record that expired before its links) is replaced.
redis.call('DEL', KEYS[3])
-- In slices: unpack puts every value on Lua's C stack, which holds about 8,000.
for i = 3, 2 + n, 5000 do
  redis.call('RPUSH', KEYS[3], unpack(ARGV, i, math.min(i + 4999, 2 + n)))
end
return 1
