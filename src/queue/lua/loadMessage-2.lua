--[[
  loadMessage: a message's record and body in one call (delivery reads both for every message it
  renders: one command instead of HGETALL and GET, on the delivery thread's Redis client).

  KEYS[1] meta  HASH   {m:<id>}:meta (a campaign's record too)
  KEYS[2] body  STRING {m:<id>}:body

  Returns {meta as a flat field, value list (empty when there is none), body or nil}.
]]
return {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2])}
