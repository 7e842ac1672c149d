--[[
  updateSuppression: writes a suppression entry again only while its address is still on the list
  (store/suppression.ts attachEvidence): the second write of an unsubscribe, a bounce or a complaint,
  which names the event that reported it, must not put back an address that went meanwhile (an
  erasure keeps it only as its digest, store/privacy.ts; an operator removed it).

  KEYS[1] list   HASH {x:<account>}:suppressed
  ARGV[1] field  the normalised address
  ARGV[2] entry  JSON SuppressionEntry

  Returns 1 written, 0 the address was not on the list (nothing written).
]]
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
