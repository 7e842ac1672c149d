-- Copies owed a count: a copy's final outcome is written in its destination's slot, and counted on
-- its message or campaign (another slot on a Redis Cluster) by finishCopy-5.lua in a second call
-- (on a single server too, but for a delivered message's copy and a campaign's, counted in the
-- outcome's own script). A process killed between the two lost the count: the campaign stayed
-- 'sending' for good, a message kept its body until its maxAge; and an outcome whose reply was lost
-- and that ioredis sent again found its lease gone, answered 0, and its caller counted nothing. So the outcome's own script also writes what the count will be,
-- in the ZSET "<dest>:owed" (member "<msgId>:<idx>|<counter>|<reason>|<hard>", score = when the
-- outcome was written); the caller takes it out once the count is made, and the reaper counts what a
-- crash left there (housekeeping/reaper.ts). Its name is the lease set's with 'leases' replaced by
-- 'owed' (as lib/lease.lua finds "owners").
local function owedKey(leases)
  return string.sub(leases, 1, -7) .. 'owed'
end

-- owe(leases, now, member): notes the count a copy is owed; '' or nil notes nothing.
local function owe(leases, now, member)
  if member ~= nil and member ~= '' then redis.call('ZADD', owedKey(leases), now, member) end
end
